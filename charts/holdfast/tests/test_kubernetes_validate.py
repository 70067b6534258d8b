"""Every example renders to manifests that kubernetes-validate --strict accepts, for every
Kubernetes minor version the chart claims (kubeVersion in Chart.yaml) that the validator knows."""

import os
import re
import subprocess

import pytest
import yaml

from conftest import CHART, DIGEST, EXAMPLES, HELM, TOOLS

VALIDATE = os.environ.get("KUBERNETES_VALIDATE", str(TOOLS / "venv/bin/kubernetes-validate"))


def claimed_versions():
    """Minor versions >= the chart's kubeVersion floor that kubernetes-validate has schemas for."""
    kube = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    floor = re.fullmatch(r">=\s*1\.(\d+)\.0(-0)?", kube)
    assert floor, f"the test understands only '>=1.N.0-0', not {kube!r}"
    import kubernetes_validate  # noqa: PLC0415 (only the validator's venv has it)

    schemas = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
    minors = sorted({int(m.group(1)) for d in os.listdir(schemas) if (m := re.fullmatch(r"v1\.(\d+)\.0-local-strict", d))})
    return [f"1.{m}.0" for m in minors if m >= int(floor.group(1))]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    files = []
    for example in EXAMPLES:
        path = out / example.name
        done = subprocess.run([HELM, "template", "holdfast", str(CHART), "-n", "shop", "-f", str(example),
                               "--set", f"image.digest={DIGEST}"], capture_output=True, text=True, check=True)
        path.write_text(done.stdout)
        files.append(str(path))
    return files


def test_the_chart_claims_versions_the_validator_knows():
    assert len(claimed_versions()) >= 3


@pytest.mark.parametrize("version", claimed_versions())
def test_examples_validate_strictly(rendered, version):
    done = subprocess.run([VALIDATE, "--strict", "--quiet", "-k", version, *rendered],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def test_helm_refuses_clusters_older_than_the_claim():
    floor = claimed_versions()[0]
    major, minor, _ = floor.split(".")
    older = f"{major}.{int(minor) - 1}.0"
    done = subprocess.run([HELM, "template", "holdfast", str(CHART), "--kube-version", older],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "kubeVersion" in done.stderr, done.stderr
    subprocess.run([HELM, "template", "holdfast", str(CHART), "--kube-version", floor],
                   capture_output=True, text=True, check=True)
