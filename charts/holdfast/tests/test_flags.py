"""Every HOLDFAST_* value the chart renders has the syntax the binary's parser for that
variable accepts (read from the clap definitions: platform's shared flags and each service
crate's own section)."""

import re

import pytest

from conftest import EXAMPLES, binary_sources, container, of_kind, render

# The syntax each of the binary's value parsers accepts (an env value that fails it makes
# the pod exit 64 at start-up).
HOST_PORTS = r"[^@/\s,:]+:\d{1,5}(,[^@/\s,:]+:\d{1,5})*"
SYNTAX = {
    "parse_duration": r"\d+(ms|s|m)?",
    "i64": r"\d+",
    "u32": r"\d+",
    "parse_http_url": r"https?://[^/\s:]+:\d{1,5}",
    "parse_brokers": HOST_PORTS,
    "parse_region": r"[a-z0-9-]{1,32}",
    "RedisUrl::parse": r"redis://(:\$\(HOLDFAST_REDIS_PASSWORD\)@)?[^@/\s:]+:\d{1,5}(/\d+)?|redis-cluster://" + HOST_PORTS,
    "StoreUrl::parse": r"scylla://" + HOST_PORTS,
    "SocketAddr": r"\d{1,3}(\.\d{1,3}){3}:\d{1,5}",
    "log_format": r"pretty|json",
    "PathBuf": r"/\S+",
    "OriginPattern::parse": r"https?://[a-z0-9.-]+(:(\d{1,5}|\*))?(,https?://[a-z0-9.-]+(:(\d{1,5}|\*))?)*",
    "String": r"\S*",
    "bool": r"true|false",
}


def parsers():
    """env var -> the parser its clap #[arg] names (or its field type)."""
    src = "\n".join(path.read_text() for path in binary_sources())
    out = {}
    for attrs, field_type in re.findall(r"#\[arg\((.*?)\)\]\s*pub \w+: ([\w:<>]+),", src, re.S):
        env = re.search(r'env\s*=\s*"(HOLDFAST_\w+)"', attrs)
        if not env:
            continue
        parser = re.search(r"value_parser\s*=\s*(clap::value_parser!\((\w+)\)|\[\"pretty\"|[\w:]+)", attrs)
        if parser is None:
            kind = field_type.removeprefix("Option<").removesuffix(">")
        elif parser.group(2):
            kind = parser.group(2)
        elif parser.group(1).startswith("["):
            kind = "log_format"
        else:
            kind = parser.group(1)
        out[env.group(1)] = kind
    assert len(out) >= 15, out
    return out


BIG_NUMBERS = {"flags": {"log-format": "json", "concurrency-limit": 1000000, "request-timeout": "250ms"},
               "services.orders.flags": {"risk-max-amount": 100000000, "risk-max-orders-per-hour": 500,
                                         "saga-lease": "2m"},
               "services.payments.flags": {"payments-latency": "50ms"}}


@pytest.mark.parametrize("values", [None, *EXAMPLES], ids=["big-numbers", *[p.stem for p in EXAMPLES]])
def test_every_holdfast_value_parses(values):
    objects = render(values) if values else render(sets={**BIG_NUMBERS, "redis.existingSecret": "redis"})
    kinds = parsers()
    seen = {}
    for cm in of_kind(objects, "ConfigMap"):
        seen |= {k: v for k, v in cm["data"].items() if k.startswith("HOLDFAST_")}
    for d in of_kind(objects, "Deployment") + of_kind(objects, "Job"):
        c = d["spec"]["template"]["spec"]["containers"][0] if d["kind"] == "Job" else container(d)
        for e in c.get("env", []):
            if e["name"].startswith("HOLDFAST_") and "value" in e:
                seen[e["name"]] = e["value"]
    assert "HOLDFAST_SHUTDOWN_DELAY" in seen and "HOLDFAST_REGION" in seen
    for name, value in seen.items():
        kind = kinds[name]
        assert re.fullmatch(SYNTAX[kind], value), f"{name}={value!r} does not parse as {kind}"
