"""Helpers for the chart tests: render the chart with the pinned helm and parse the result.

HELM names the helm binary (scripts/install-chart-tools.sh puts it under
~/.cache/holdfast/chart-tools/bin); KUBERNETES_VALIDATE the validator.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

CHART = Path(__file__).resolve().parent.parent
REPO = CHART.parent.parent
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
SERVICES = ["inventory", "catalog", "cart", "payments", "orders", "warehouse"]
TOOLS = Path(os.environ.get("HOLDFAST_CACHE", Path.home() / ".cache/holdfast")) / "chart-tools"
HELM = os.environ.get("HELM", str(TOOLS / "bin/helm"))
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
# A digest of the right shape, for renders that must pin the image.
DIGEST = "sha256:" + "0123456789abcdef" * 4


class RenderError(Exception):
    """helm template exited non-zero; the message is its stderr."""


def render(*values_files, sets=None, api_versions=(), namespace="shop"):
    """Renders the chart; returns the list of objects. Raises RenderError when helm fails."""
    # Every value goes through --set-json so types survive (replicas 0 stays an integer).
    args = [HELM, "template", "holdfast", str(CHART), "--namespace", namespace]
    for f in values_files:
        args += ["-f", str(f)]
    for key, value in (sets or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    for api in api_versions:
        args += ["--api-versions", api]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def render_error(*values_files, sets=None):
    """Renders expecting failure; returns helm's error message."""
    with pytest.raises(RenderError) as err:
        render(*values_files, sets=sets)
    return str(err.value)


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def by_component(objects, kind):
    return {o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in of_kind(objects, kind)}


def container(deployment):
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_map(c):
    return {e["name"]: e for e in c.get("env", [])}


def seconds(duration):
    """The binary's duration syntax (250ms, 10s, 5m; bare = seconds) in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m)?", duration)
    assert m, f"not a holdfast duration: {duration!r}"
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n / 1000, "s": n, "m": n * 60}[unit]


def binary_sources():
    """Every Rust source of the services: each crate owns its section of the command line."""
    return sorted(REPO.glob("services/*/src/**/*.rs"))


def binary_env_names():
    """Every HOLDFAST_* env var the binary reads, from its clap definitions."""
    names = set()
    for src in binary_sources():
        names |= set(re.findall(r'env\s*=\s*"(HOLDFAST_[A-Z_]+)"', src.read_text()))
    assert "HOLDFAST_REDIS_URL" in names, "could not read the binary's flags"
    return names


@pytest.fixture(scope="session")
def default_render():
    return render()


@pytest.fixture(scope="session", params=[None] + EXAMPLES, ids=["defaults"] + [p.stem for p in EXAMPLES])
def any_render(request):
    """The chart with its defaults and with each example values file."""
    files = [] if request.param is None else [request.param]
    return render(*files, sets={"image.digest": DIGEST}, api_versions=[SERVICE_MONITOR_API])
