#!/usr/bin/env python3
"""Validates fly.toml and the GitHub workflows against the public schemas kept in .ci/schemas."""

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


if __name__ == "__main__":
    main()
