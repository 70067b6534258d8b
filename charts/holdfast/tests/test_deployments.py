"""Every Deployment, under the defaults and every example: the right command, probes on the
right gRPC health name, resources, the locked-down security context, and a grace period the
drain fits in."""

from conftest import SERVICES, binary_env_names, by_component, container, env_map, of_kind, seconds


def test_one_deployment_and_service_per_service(any_render):
    assert sorted(by_component(any_render, "Deployment")) == sorted(SERVICES)
    assert sorted(by_component(any_render, "Service")) == sorted(SERVICES)


def test_each_runs_holdfast_serve_its_service(any_render):
    for name, d in by_component(any_render, "Deployment").items():
        assert container(d)["args"] == ["serve", name]


def test_probes_are_native_grpc_on_the_service_name(any_render):
    for name, d in by_component(any_render, "Deployment").items():
        c = container(d)
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": grpc_port, "service": name}, (name, probe)
        listen = env_map(c).get("HOLDFAST_LISTEN")
        assert listen is None  # from the ConfigMap, checked below against the port
    (cm,) = of_kind(any_render, "ConfigMap")
    grpc_ports = {p["containerPort"] for d in of_kind(any_render, "Deployment") for p in container(d)["ports"] if p["name"] == "grpc"}
    assert cm["data"]["HOLDFAST_LISTEN"] == f"0.0.0.0:{grpc_ports.pop()}"


def test_resources_are_requested_and_memory_is_limited(any_render):
    for name, d in by_component(any_render, "Deployment").items():
        r = container(d)["resources"]
        assert r["requests"]["cpu"] and r["requests"]["memory"], name
        assert r["limits"]["memory"], name


def test_security_context_is_locked_down(any_render):
    for name, d in by_component(any_render, "Deployment").items():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        sc = container(d)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        # Writable scratch space exists only as emptyDirs.
        mounts = {m["mountPath"]: m["name"] for m in container(d)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert "emptyDir" in volumes[mounts["/data"]]


def test_grace_period_outlasts_prestop_delay_and_drain(any_render):
    for name, d in by_component(any_render, "Deployment").items():
        pod = d["spec"]["template"]["spec"]
        env = env_map(container(d))
        pre_stop = container(d)["lifecycle"]["preStop"]["sleep"]["seconds"]
        delay = seconds(env["HOLDFAST_SHUTDOWN_DELAY"]["value"])
        drain = seconds(env["HOLDFAST_DRAIN_TIMEOUT"]["value"])
        assert pre_stop > 0, name
        assert pod["terminationGracePeriodSeconds"] > pre_stop + delay + drain, name


def test_every_holdfast_env_var_is_one_the_binary_reads(any_render):
    known = binary_env_names()
    (cm,) = of_kind(any_render, "ConfigMap")
    names = {k for k in cm["data"] if k.startswith("HOLDFAST_")}
    for d in of_kind(any_render, "Deployment"):
        names |= {n for n in env_map(container(d)) if n.startswith("HOLDFAST_")}
    names.discard("HOLDFAST_REDIS_PASSWORD")  # only expanded into HOLDFAST_REDIS_URL
    assert names <= known, names - known


def test_callers_get_their_upstreams_and_only_redis_users_get_redis(any_render):
    deployments = by_component(any_render, "Deployment")
    urls = {n: sorted(k for k in env_map(container(d)) if k.endswith("_URL") and k != "HOLDFAST_REDIS_URL")
            for n, d in deployments.items()}
    assert urls["orders"] == sorted(f"HOLDFAST_{s.upper()}_URL" for s in ["inventory", "catalog", "cart", "payments", "warehouse"])
    assert urls["cart"] == ["HOLDFAST_CATALOG_URL", "HOLDFAST_INVENTORY_URL"]
    for other in ["inventory", "catalog", "payments", "warehouse"]:
        assert urls[other] == [], other
    redis_users = sorted(n for n, d in deployments.items() if "HOLDFAST_REDIS_URL" in env_map(container(d)))
    assert redis_users == ["cart", "catalog", "inventory"]
    services = {s["metadata"]["name"] for s in of_kind(any_render, "Service")}
    for n, d in deployments.items():
        for k, e in env_map(container(d)).items():
            if k.endswith("_URL") and k != "HOLDFAST_REDIS_URL":
                host = e["value"].removeprefix("http://").split(":")[0]
                assert host in services, (n, k, host)


def test_services_expose_grpc_and_admin_with_app_protocol(any_render):
    for name, s in by_component(any_render, "Service").items():
        ports = {p["name"]: p for p in s["spec"]["ports"]}
        assert set(ports) == {"grpc", "admin"}, name
        assert ports["grpc"]["appProtocol"] and ports["admin"]["appProtocol"] == "http"
        assert s["spec"]["selector"]["app.kubernetes.io/component"] == name


def test_every_object_has_the_standard_labels(any_render):
    for o in any_render:
        labels = o["metadata"]["labels"]
        for key in ["name", "instance", "version", "component", "part-of", "managed-by"]:
            assert f"app.kubernetes.io/{key}" in labels, (o["kind"], o["metadata"]["name"], key)
        assert o["metadata"]["namespace"] == "shop"


def test_topology_spread_over_zones_and_nodes(default_render):
    for name, d in by_component(default_render, "Deployment").items():
        spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for c in spread:
            assert c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == name


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(default_render):
    (job,) = of_kind(default_render, "Job")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["migrate"]
    assert env_map(c)["HOLDFAST_STORE"]["value"].startswith("scylla://")
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
