#!/usr/bin/env python3
"""Validates fly.toml and the GitHub workflows against the public schemas kept in .ci/schemas,
and that the Grafana alert rules are the provisioning format's shape (no public schema)."""

import json
import pathlib
import sys
import tomllib

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / ".ci" / "schemas"


def validate(document, schema_file, label):
    schema = json.loads((SCHEMAS / schema_file).read_text())
    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as error:
        sys.exit(f"{label}: {error.message} (at {'/'.join(map(str, error.absolute_path))})")
    print(f"{label}: valid against {schema_file}")


def main():
    if not SCHEMAS.is_dir():
        sys.exit(f"schemas not found at {SCHEMAS}")
    validate(tomllib.loads((ROOT / "fly.toml").read_text()), "fly.json", "fly.toml")
    for workflow in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        document = yaml.safe_load(workflow.read_text())
        # YAML 1.1 reads the key `on` as the boolean true.
        if True in document:
            document["on"] = document.pop(True)
        validate(document, "github-workflow.json", str(workflow.relative_to(ROOT)))
    check_alert_rules(ROOT / "docs" / "grafana" / "alerts.yaml")


def check_alert_rules(path):
    document = yaml.safe_load(path.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    for rule in rules:
        ref_ids = [query["refId"] for query in rule["data"]]
        if rule["condition"] not in ref_ids or not all(query["model"]["refId"] in ref_ids for query in rule["data"]):
            sys.exit(f"{path.name}: rule {rule['uid']} names a condition or query that is not there")
    print(f"{path.relative_to(ROOT)}: {len(rules)} alert rules, each condition a query of its own")


if __name__ == "__main__":
    main()
