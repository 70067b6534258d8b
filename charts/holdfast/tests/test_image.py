"""The Dockerfile builds with the toolchain the repository pins and runs like the chart expects."""

import re
import tomllib

from conftest import CHART, REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_build_stage_uses_the_pinned_toolchain():
    channel = tomllib.loads((REPO / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.M)
    assert len(froms) >= 2, "multi-stage build expected"
    assert froms[0].startswith(f"rust:{channel}-"), froms[0]
    assert re.search(rf"^ENV RUSTUP_TOOLCHAIN={re.escape(channel)}$", DOCKERFILE, re.M)


def test_runtime_stage_is_minimal_and_non_root():
    final = DOCKERFILE[DOCKERFILE.rindex("FROM "):]
    assert "distroless" in final.split("\n")[0]
    user = re.search(r"^USER\s+(\d+)", final, re.M)
    assert user and int(user.group(1)) != 0
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/holdfast"\]', final, re.M)


def test_image_ports_match_the_chart_defaults():
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"HOLDFAST_LISTEN=0.0.0.0:{values['ports']['grpc']}" in DOCKERFILE
    assert f"HOLDFAST_ADMIN_LISTEN=0.0.0.0:{values['ports']['admin']}" in DOCKERFILE


def test_dockerignore_keeps_build_output_and_vcs_out():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {"target", ".git", "data"} <= ignored
