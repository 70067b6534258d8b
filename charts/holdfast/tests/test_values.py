"""values.schema.json and the chart's cross-value checks reject what an SRE could get wrong."""

import json
import subprocess

import jsonschema
import pytest
import yaml

from conftest import CHART, EXAMPLES, HELM, SERVICES, render, render_error


def test_schema_is_draft_07_and_accepts_the_defaults():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_notes_name_every_service_and_the_external_engines():
    done = subprocess.run([HELM, "install", "holdfast", str(CHART), "-n", "shop", "--dry-run=client",
                           "--set", "networkPolicy.enabled=true"], capture_output=True, text=True, check=True)
    notes = done.stdout[done.stdout.index("NOTES:"):]
    for name in SERVICES:
        assert f"holdfast-{name}:50051" in notes, name
    assert "this chart runs none of them" in notes
    assert "no networkPolicy.edgeFrom" in notes


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_render(example):
    assert render(example)


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        ({"services.cart.replicas": 0}, "/services/cart/replicas"),
        ({"services.orders.autoscaling.minReplicas": 0}, "minReplicas"),
        ({"replicaCount": 3}, "replicaCount"),
        ({"services.cart.sidecar": True}, "sidecar"),
        ({"services.search": {"enabled": True}}, "search"),
        ({"redis.password": "hunter2"}, "password"),
        ({"redis.url": "redis://:hunter2@redis:6379"}, "/redis/url"),
        ({"redis.url": "redis://redis"}, "/redis/url"),
        ({"store.url": "sqlite:///data/holdfast.db"}, "/store/url"),
        ({"kafka.brokers": ""}, "/kafka/brokers"),
        ({"region": "EU-West"}, "/region"),
        ({"flags": {"listen": "0.0.0.0:1"}}, "listen"),
        ({"services.orders.flags": {"saga-lease": "1h"}}, "saga-lease"),
        ({"services.orders.flags": {"risk-max-orders-per-hour": 0}}, "risk-max-orders-per-hour"),
        ({"env": [{"name": "HOLDFAST_REDIS_URL", "value": "redis://x:1"}]}, "/env/0/name"),
        ({"image.digest": "latest"}, "/image/digest"),
    ],
)
def test_schema_rejects(sets, complaint):
    assert complaint in render_error(sets=sets)


def test_grace_period_must_outlast_prestop_delay_and_drain():
    message = render_error(sets={"terminationGracePeriodSeconds": 40, "shutdown": {
        "preStopSeconds": 5, "delaySeconds": 5, "drainTimeoutSeconds": 30}})
    assert "terminationGracePeriodSeconds (40)" in message
    assert render(sets={"terminationGracePeriodSeconds": 41, "shutdown": {
        "preStopSeconds": 5, "delaySeconds": 5, "drainTimeoutSeconds": 30}})


def test_a_service_cannot_be_disabled_while_another_calls_it():
    assert "services.orders calls payments" in render_error(sets={"services.payments.enabled": False})
    # Without its callers, a service may go.
    objects = render(sets={"services.orders.enabled": False, "services.payments.enabled": False})
    names = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in objects if o["kind"] == "Deployment"}
    assert names == {"inventory", "catalog", "cart", "warehouse"}


def test_redis_password_needs_a_standalone_url():
    message = render_error(sets={"redis.url": "redis-cluster://a:7000,b:7001", "redis.existingSecret": "redis-auth"})
    assert "redis-cluster://" in message


def test_payments_runs_exactly_one_replica():
    assert "exactly one replica" in render_error(sets={"services.payments.replicas": 2})
    assert "exactly one replica" in render_error(sets={"services.payments.autoscaling.enabled": True})
