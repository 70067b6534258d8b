"""The real `holdfast` binary accepts what the chart renders: each Deployment's command and
env (ConfigMap + env, with Kubernetes' $(VAR) expansion) passes the binary's configuration
checks (a rejected value exits 64 before any connection; an unreachable engine exits 69),
and payments, which needs no engine, serves: its gRPC health answers SERVING on exactly
the name the probes ask for, and SIGTERM drains it within the grace period.

HOLDFAST_BIN names the binary (`make chart-test` builds it); without it these tests skip.
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import by_component, container, of_kind, render

BIN = os.environ.get("HOLDFAST_BIN", "")
pytestmark = pytest.mark.skipif(not (BIN and Path(BIN).is_file()), reason="HOLDFAST_BIN is not a built holdfast")

EXIT_CONFIG, EXIT_UNAVAILABLE = 64, 69


def closed_port():
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def objects():
    port = closed_port()
    return render(sets={
        "redis.url": f"redis://127.0.0.1:{port}/0",
        "redis.existingSecret": "redis-auth",
        "store.url": f"scylla://127.0.0.1:{port}",
        "kafka.brokers": f"127.0.0.1:{port}",
        "region": "eu-west-1",
        "shutdown": {"preStopSeconds": 1, "delaySeconds": 1, "drainTimeoutSeconds": 5},
        "terminationGracePeriodSeconds": 10,
        "flags": {"log-format": "json", "concurrency-limit": 1000000, "request-timeout": "250ms"},
        "services.orders.flags": {"risk-max-amount": 100000000, "risk-max-orders-per-hour": 500},
        "services.payments.flags": {"payments-latency": "0s"},
        "auth": {"issuer": "https://idp.example", "audience": "holdfast", "existingSecret": "holdfast-auth"},
    })


def auth_secret(directory):
    """The auth Secret's files as the pod would see them: a JWKS with one Ed25519 key and a
    service token (its signature is not checked at start-up)."""
    directory.mkdir(parents=True, exist_ok=True)
    x = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    (directory / "jwks.json").write_text(json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]}))
    (directory / "service-token").write_text("header.payload.signature\n")
    return directory


def pod_env(objects, deployment, data_dir):
    """The env Kubernetes would give the container; listeners moved to free local ports."""
    (cm,) = of_kind(objects, "ConfigMap")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env |= cm["data"]
    for e in container(deployment).get("env", []):
        if "valueFrom" in e:
            env[e["name"]] = "not-a-real-secret"
        else:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), e["value"])
    env |= {"HOLDFAST_LISTEN": "127.0.0.1:0", "HOLDFAST_ADMIN_LISTEN": "127.0.0.1:0", "HOLDFAST_DATA_DIR": str(data_dir)}
    # The auth Secret's mount point, moved to local files.
    secret = auth_secret(Path(str(data_dir) + "-auth"))
    for name, value in env.items():
        if value.startswith("/etc/holdfast/auth/"):
            env[name] = str(secret / value.removeprefix("/etc/holdfast/auth/"))
    return env


@pytest.mark.parametrize("name", ["inventory", "catalog", "cart", "orders", "warehouse"])
def test_engine_services_accept_their_config_and_stop_at_the_engine(objects, name, tmp_path):
    d = by_component(objects, "Deployment")[name]
    done = subprocess.run([BIN, *container(d)["args"]], env=pod_env(objects, d, tmp_path),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == EXIT_UNAVAILABLE, (done.returncode, done.stderr[-2000:])
    assert re.search(r"cannot (reach redis|open store)", done.stderr), done.stderr[-2000:]


def test_payments_serves_its_probe_name_and_drains_on_sigterm(objects, tmp_path):
    d = by_component(objects, "Deployment")["payments"]
    c = container(d)
    out = tmp_path / "out"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([BIN, *c["args"]], env=pod_env(objects, d, tmp_path / "data"),
                                stdout=stdout, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while "holdfast serving" not in out.read_text():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "payments did not get ready"
            time.sleep(0.05)
        line = out.read_text()
        addr = re.search(r" on ([0-9.:]+) \(gRPC", line).group(1)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            service = c[probe]["grpc"]["service"]
            health = subprocess.run(["grpcurl", "-plaintext", "-d", f'{{"service":"{service}"}}', addr,
                                     "grpc.health.v1.Health/Check"], capture_output=True, text=True, timeout=20, check=False)
            assert '"SERVING"' in health.stdout, (probe, health.stdout, health.stderr)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert proc.wait(timeout=grace - pre_stop) == 0
        assert time.monotonic() - started < grace - pre_stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
