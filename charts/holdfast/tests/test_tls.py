"""TLS and browser origins: with `tls.enabled` every service mounts the Secret and gets the
binary's --tls-* flags, calls its upstreams over https, the mutual services require client
certificates from their callers (which present theirs), probes move to the admin port (the
kubelet's gRPC probes speak plaintext only); `corsOrigins` reaches HOLDFAST_CORS_ORIGIN.
With HOLDFAST_BIN, payments runs with the rendered TLS env (certificates from openssl) and
answers on both its probe paths and over TLS with grpcurl."""

import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import by_component, container, env_map, of_kind, render, render_error
from test_binary import auth_secret

TLS = {"tls.enabled": True, "tls.secretName": "holdfast-tls", "tls.mutualServices": ["payments"],
       "corsOrigins": ["https://shop.example", "http://localhost:*"]}
DIR = "/etc/holdfast/tls"


@pytest.fixture(scope="module")
def objects():
    return render(sets=TLS)


def test_every_service_mounts_the_secret_and_serves_tls(objects):
    for name, d in by_component(objects, "Deployment").items():
        spec = d["spec"]["template"]["spec"]
        c = container(d)
        (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == "holdfast-tls", name
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "tls"]
        assert mount == {"name": "tls", "mountPath": DIR, "readOnly": True}, "no subPath: renewals must reach the pod"
        env = {k: e.get("value") for k, e in env_map(c).items()}
        assert env["HOLDFAST_TLS_CERT"] == f"{DIR}/tls.crt" and env["HOLDFAST_TLS_KEY"] == f"{DIR}/tls.key", name
        assert env["HOLDFAST_TLS_PEER_CA"] == f"{DIR}/ca.crt", name
        for key, url in env.items():
            if key.endswith("_URL") and key != "HOLDFAST_REDIS_URL":
                assert url.startswith("https://"), (name, key, url)


def test_mutual_services_require_client_certificates_and_their_callers_present_one(objects):
    deployments = by_component(objects, "Deployment")
    env = {n: env_map(container(d)) for n, d in deployments.items()}
    assert env["payments"]["HOLDFAST_TLS_CLIENT_CA"]["value"] == f"{DIR}/ca.crt"
    assert [n for n in env if "HOLDFAST_TLS_CLIENT_CA" in env[n]] == ["payments"]
    # orders calls payments: it presents the pod's certificate; cart calls no mutual service.
    assert env["orders"]["HOLDFAST_TLS_PEER_CERT"]["value"] == f"{DIR}/tls.crt"
    assert env["orders"]["HOLDFAST_TLS_PEER_KEY"]["value"] == f"{DIR}/tls.key"
    assert "HOLDFAST_TLS_PEER_CERT" not in env["cart"]


def test_probes_use_the_admin_port_under_tls(objects):
    for name, d in by_component(objects, "Deployment").items():
        c = container(d)
        assert c["startupProbe"]["httpGet"] == {"port": "admin", "path": "/readyz"}, name
        assert c["readinessProbe"]["httpGet"] == {"port": "admin", "path": "/readyz"}, name
        assert c["livenessProbe"]["httpGet"] == {"port": "admin", "path": "/healthz"}, name
        assert "grpc" not in c["readinessProbe"], name


def test_cors_origins_reach_the_binary(objects):
    (cm,) = of_kind(objects, "ConfigMap")
    assert cm["data"]["HOLDFAST_CORS_ORIGIN"] == "https://shop.example,http://localhost:*"
    (plain,) = of_kind(render(), "ConfigMap")
    assert "HOLDFAST_CORS_ORIGIN" not in plain["data"], "no origins by default: browsers are refused"


def test_tls_needs_a_secret_and_mutual_tls_needs_tls():
    assert "tls.secretName" in render_error(sets={"tls.enabled": True})
    assert "tls.enabled" in render_error(sets={"tls.mutualServices": ["payments"]})
    assert "corsOrigins" in render_error(sets={"corsOrigins": ["https://*.example"]})
    assert "mutualServices" in render_error(sets={"tls.enabled": True, "tls.secretName": "s",
                                                  "tls.mutualServices": ["billing"]})


BIN = os.environ.get("HOLDFAST_BIN", "")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.mark.skipif(not (BIN and Path(BIN).is_file()), reason="HOLDFAST_BIN is not a built holdfast")
def test_payments_serves_over_tls_with_the_rendered_env(objects, tmp_path):
    # A CA and a server certificate for localhost, as the Secret would hold them.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=test CA", "-keyout", tmp_path / "ca.key", "-out", tmp_path / "ca.crt")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=payments",
            "-keyout", tmp_path / "tls.key", "-out", tmp_path / "tls.csr")
    (tmp_path / "ext").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", tmp_path / "tls.csr", "-CA", tmp_path / "ca.crt", "-CAkey", tmp_path / "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", tmp_path / "ext", "-out", tmp_path / "tls.crt")
    d = by_component(objects, "Deployment")["payments"]
    c = container(d)
    (cm,) = of_kind(objects, "ConfigMap")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} | cm["data"]
    env |= {e["name"]: e["value"].replace(DIR, str(tmp_path)) for e in c["env"] if "value" in e}
    env |= {"HOLDFAST_LISTEN": "127.0.0.1:0", "HOLDFAST_ADMIN_LISTEN": "127.0.0.1:0",
            "HOLDFAST_DATA_DIR": str(tmp_path / "data")}
    # The auth Secret's mount point, moved to local files (as test_binary does).
    secret = auth_secret(tmp_path / "auth")
    for name, value in env.items():
        if value.startswith("/etc/holdfast/auth/"):
            env[name] = str(secret / value.removeprefix("/etc/holdfast/auth/"))
    out = tmp_path / "out"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([BIN, *c["args"]], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while "holdfast serving" not in out.read_text():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "payments did not get ready"
            time.sleep(0.05)
        line = out.read_text()
        grpc = re.search(r" on ([0-9.:]+) \(gRPC", line).group(1)
        admin = re.search(r"admin on ([0-9.:]+)", line).group(1)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            path = c[probe]["httpGet"]["path"]
            with urllib.request.urlopen(f"http://{admin}{path}", timeout=10) as answer:
                assert answer.status == 200, (probe, path)
        port = grpc.rsplit(":", 1)[1]
        # payments requires client certificates: the pod's own (signed by the same CA) will do.
        ok = subprocess.run(["grpcurl", "-max-time", "10", "-cacert", tmp_path / "ca.crt",
                             "-cert", tmp_path / "tls.crt", "-key", tmp_path / "tls.key", "-d", '{"service":"payments"}',
                             f"localhost:{port}", "grpc.health.v1.Health/Check"],
                            capture_output=True, text=True, timeout=20, check=False)
        assert '"SERVING"' in ok.stdout, (ok.stdout, ok.stderr)
        refused = subprocess.run(["grpcurl", "-max-time", "10", "-connect-timeout", "2", "-cacert", tmp_path / "ca.crt",
                                  "-d", "{}", f"localhost:{port}", "grpc.health.v1.Health/Check"],
                                 capture_output=True, text=True, timeout=20, check=False)
        assert refused.returncode != 0, "no client certificate: refused"
    finally:
        proc.kill()
        proc.wait()


def test_rendered_tls_and_cors_values_parse(objects):
    from test_flags import SYNTAX, parsers

    kinds = parsers()
    (cm,) = of_kind(objects, "ConfigMap")
    seen = {k: v for k, v in cm["data"].items() if k.startswith("HOLDFAST_")}
    for d in of_kind(objects, "Deployment"):
        seen |= {e["name"]: e["value"] for e in container(d)["env"] if e["name"].startswith("HOLDFAST_") and "value" in e}
    assert {"HOLDFAST_TLS_CERT", "HOLDFAST_TLS_CLIENT_CA", "HOLDFAST_TLS_PEER_KEY", "HOLDFAST_CORS_ORIGIN"} <= set(seen)
    for name, value in seen.items():
        assert re.fullmatch(SYNTAX[kinds[name]], value), f"{name}={value!r} does not parse as {kinds[name]}"
