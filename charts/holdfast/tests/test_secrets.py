"""Secrets come from existing Secrets only: none is rendered, none lands in a ConfigMap."""

import json

from conftest import EXAMPLES, by_component, container, env_map, of_kind, render

WITH_SECRETS = {
    "redis.existingSecret": "sentinel-redis-secret",
    "redis.passwordKey": "sentinel-password-key",
    "secretEnv": [{"name": "OTEL_EXPORTER_OTLP_HEADERS", "secretName": "sentinel-otel-secret", "key": "sentinel-headers"}],
}
SENTINELS = ["sentinel-redis-secret", "sentinel-password-key", "sentinel-otel-secret", "sentinel-headers",
             "OTEL_EXPORTER_OTLP_HEADERS", "PASSWORD"]


def test_no_secret_object_and_nothing_secret_in_config_maps():
    for objects in [render(sets=WITH_SECRETS)] + [render(e) for e in EXAMPLES]:
        assert of_kind(objects, "Secret") == []
        for cm in of_kind(objects, "ConfigMap"):
            text = json.dumps(cm["data"]).lower()
            for word in SENTINELS + ["password", "secret", "token", "@"]:
                assert word.lower() not in text, (cm["metadata"]["name"], word)


def test_secrets_reach_containers_only_through_secret_key_refs():
    deployments = by_component(render(sets=WITH_SECRETS), "Deployment")
    for name, d in deployments.items():
        env = container(d)["env"]
        names = [e["name"] for e in env]
        otel = env_map(container(d))["OTEL_EXPORTER_OTLP_HEADERS"]
        assert otel == {"name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom": {"secretKeyRef": {
            "name": "sentinel-otel-secret", "key": "sentinel-headers"}}}
        if name in {"inventory", "catalog", "cart"}:
            password = env_map(container(d))["HOLDFAST_REDIS_PASSWORD"]
            assert password["valueFrom"]["secretKeyRef"] == {"name": "sentinel-redis-secret", "key": "sentinel-password-key"}
            url = env_map(container(d))["HOLDFAST_REDIS_URL"]["value"]
            assert url == "redis://:$(HOLDFAST_REDIS_PASSWORD)@redis:6379"
            # Kubernetes expands $(VAR) only from variables defined earlier in the list.
            assert names.index("HOLDFAST_REDIS_PASSWORD") < names.index("HOLDFAST_REDIS_URL")
        else:
            assert "HOLDFAST_REDIS_PASSWORD" not in names
        # No plain value anywhere carries a secret's content or name.
        for e in env:
            assert "sentinel" not in e.get("value", ""), (name, e)
