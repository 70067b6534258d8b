{{/* Every service the chart knows, in start-up order. */}}
{{- define "holdfast.serviceNames" -}}
inventory catalog cart payments orders warehouse
{{- end }}

{{/* Chart name, overridable. */}}
{{- define "holdfast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name; every object is named "<fullname>-<service>". */}}
{{- define "holdfast.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else if contains (include "holdfast.name" .) .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "holdfast.name" .) | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* "chart-version" for the helm.sh/chart label. */}}
{{- define "holdfast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; pass (dict "root" $ "component" "inventory"). */}}
{{- define "holdfast.labels" -}}
helm.sh/chart: {{ include "holdfast.chart" .root }}
{{ include "holdfast.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: holdfast
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Selector labels: stable for the life of a release. */}}
{{- define "holdfast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "holdfast.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels that select every holdfast pod of this release (NetworkPolicy, ServiceMonitor). */}}
{{- define "holdfast.releaseSelector" -}}
app.kubernetes.io/name: {{ include "holdfast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The image reference: a digest wins over a tag; the tag defaults to appVersion. */}}
{{- define "holdfast.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{- define "holdfast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "holdfast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The gRPC service each short name serves (for grpc-web Ingress paths). */}}
{{- define "holdfast.grpcService" -}}
{{- $names := dict "inventory" "holdfast.inventory.v1.InventoryService" "catalog" "holdfast.catalog.v1.CatalogService" "cart" "holdfast.cart.v1.CartService" "orders" "holdfast.orders.v1.OrderService" "payments" "holdfast.payments.v1.PaymentsService" "warehouse" "holdfast.warehouse.v1.WarehouseService" -}}
{{- get $names . -}}
{{- end }}

{{/* The services each one calls over gRPC (the binary's --<name>-url flags). */}}
{{- define "holdfast.upstreams" -}}
{{- $calls := dict "orders" (list "inventory" "catalog" "cart" "payments" "warehouse") "cart" (list "catalog" "inventory") -}}
{{- get $calls . | default list | toJson -}}
{{- end }}

{{/* Which engines each service talks to (mirrors needs_redis / needs_store in the binary). */}}
{{- define "holdfast.needsRedis" -}}
{{- has . (list "inventory" "cart" "catalog") -}}
{{- end }}
{{- define "holdfast.needsStore" -}}
{{- has . (list "cart" "catalog" "orders" "warehouse") -}}
{{- end }}

{{/* The in-cluster URL of a service's gRPC port. */}}
{{- define "holdfast.serviceUrl" -}}
{{ ternary "https" "http" .root.Values.tls.enabled }}://{{ include "holdfast.fullname" .root }}-{{ .component }}:{{ .root.Values.ports.grpc }}
{{- end }}

{{/* Where the TLS Secret is mounted. */}}
{{- define "holdfast.tlsDir" -}}
/etc/holdfast/tls
{{- end }}

{{/* Pod-level security context: non-root, fixed uid/gid (the image's "nonroot"), seccomp. */}}
{{- define "holdfast.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context. */}}
{{- define "holdfast.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Image pull secrets (names of existing Secrets). */}}
{{- define "holdfast.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Env vars read from existing Secrets: [{name, secretName, key}]. */}}
{{- define "holdfast.secretEnv" -}}
{{- range . }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- end }}

{{/* Checks that span several values (the schema checks each one alone). */}}
{{- define "holdfast.validate" -}}
{{- $s := .Values.shutdown -}}
{{- $need := add $s.preStopSeconds $s.delaySeconds $s.drainTimeoutSeconds -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $need) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than shutdown.preStopSeconds + shutdown.delaySeconds + shutdown.drainTimeoutSeconds (%d), or the kubelet kills pods mid-drain" (int .Values.terminationGracePeriodSeconds) (int $need)) -}}
{{- end -}}
{{- if and .Values.redis.existingSecret (hasPrefix "redis-cluster://" .Values.redis.url) -}}
{{- fail "redis.existingSecret: holdfast authenticates only to a standalone redis:// URL; a redis-cluster:// deployment must be reached without a password (restrict it with networkPolicy)" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.secretName: name the kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) when tls.enabled is true" -}}
{{- end -}}
{{- if and .Values.tls.mutualServices (not .Values.tls.enabled) -}}
{{- fail "tls.mutualServices needs tls.enabled: mutual TLS runs over the TLS listener" -}}
{{- end -}}
{{- $payments := .Values.services.payments -}}
{{- if and $payments.enabled (or (gt (int $payments.replicas) 1) $payments.autoscaling.enabled) -}}
{{- fail "services.payments: the simulated payment provider keeps its ledger per pod (SQLite on an emptyDir); run exactly one replica, without autoscaling" -}}
{{- end -}}
{{- range $name := splitList " " (include "holdfast.serviceNames" .) -}}
{{- $svc := get $.Values.services $name -}}
{{- if $svc.enabled -}}
{{- range $up := include "holdfast.upstreams" $name | fromJsonArray -}}
{{- if not (get $.Values.services $up).enabled -}}
{{- fail (printf "services.%s calls %s, but services.%s.enabled is false" $name $up $up) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* A flag's value as the binary parses it: YAML numbers arrive as float64, and
1e+08 is not an integer to clap; the schema allows integers and strings only. */}}
{{- define "holdfast.flagValue" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- int64 . | toString | quote -}}
{{- else -}}
{{- . | toString | quote -}}
{{- end -}}
{{- end }}
