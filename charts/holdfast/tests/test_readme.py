"""The chart README documents every value the schema accepts."""

import json
import re

from conftest import CHART

# Values documented as one row (their inner shape is described in that row).
UNITS = {"resources", "flags", "probe", "engineEgress"}


def value_paths():
    schema = json.loads((CHART / "values.schema.json").read_text())
    paths = []

    def walk(node, path):
        ref = node.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name in UNITS:
                paths.append(path)
                return
            node = schema["definitions"][name]
        props = node.get("properties")
        if not props:
            paths.append(path)
            return
        for key, child in props.items():
            key = "<name>" if path == "services" else key
            walk(child, f"{path}.{key}" if path else key)

    walk(schema, "")
    return sorted(set(paths))


def test_readme_lists_every_value():
    documented = set(re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), re.M))
    paths = value_paths()
    assert len(paths) > 50
    assert set(paths) - documented == set()
    assert documented - set(paths) == set(), "README documents values the schema does not accept"
