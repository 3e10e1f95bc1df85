#!/usr/bin/env python3
"""Validates JSON documents against ivrgate's webhook JSON Schemas (docs/schemas/).

Usage:
    validate_schemas.py [--schemas DIR] SCHEMA-FILE-NAME JSON-FILE...
    validate_schemas.py [--schemas DIR] --check

SCHEMA-FILE-NAME is a file name inside the schema directory, e.g. `event.call.cdr.json` or
`answer.json`. Every schema of the directory is loaded into one registry, so `$ref`s across
files (`common.json#/$defs/...`) resolve by their `$id` without network access.

`--check` validates every schema against the draft 2020-12 meta-schema and each schema's own
`examples` against the schema.

Exit status: 0 when every document is valid, 1 when one is not (each error printed with the
file and the JSON path of the failing value), 2 on a usage error or an unreadable file.
Needs `jsonschema` and `referencing` from PyPI (tests/py/requirements.txt).
"""

import json
import sys
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "docs" / "schemas"


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_schemas(directory):
    """All schemas of `directory` by file name, and a registry of them by `$id`."""
    schemas = {}
    resources = []
    for path in sorted(Path(directory).glob("*.json")):
        schema = load_json(path)
        schemas[path.name] = schema
        resource = Resource.from_contents(schema, default_specification=DRAFT202012)
        resources.append((schema.get("$id", path.name), resource))
    return schemas, Registry().with_resources(resources)


def validator_for(schema, registry):
    return Draft202012Validator(schema, registry=registry)


def report(label, errors):
    """Prints each error with its JSON path; returns how many there were."""
    count = 0
    for error in sorted(errors, key=lambda e: list(e.absolute_path)):
        count += 1
        print(f"{label}: {error.json_path}: {error.message}", file=sys.stderr)
        if error.context:
            deepest = best_match([error])
            print(f"    most likely: {deepest.json_path}: {deepest.message}", file=sys.stderr)
        for sub in sorted(error.context or [], key=lambda e: list(e.absolute_path))[:12]:
            print(f"    {sub.json_path}: {sub.message}", file=sys.stderr)
    return count


def check_all(schemas, registry):
    failures = 0
    for name, schema in schemas.items():
        meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
        failures += report(f"{name} (meta-schema)", meta.iter_errors(schema))
        validator = validator_for(schema, registry)
        for i, example in enumerate(schema.get("examples", [])):
            failures += report(f"{name} examples[{i}]", validator.iter_errors(example))
        count = len(schema.get("examples", []))
        print(f"{name}: schema ok, {count} example(s) checked")
    return failures


def main(argv):
    args = list(argv)
    directory = DEFAULT_DIR
    if args[:1] == ["--schemas"]:
        if len(args) < 2:
            print(__doc__, file=sys.stderr)
            return 2
        directory = Path(args[1])
        args = args[2:]
    try:
        schemas, registry = load_schemas(directory)
    except (OSError, ValueError) as e:
        print(f"cannot load schemas from {directory}: {e}", file=sys.stderr)
        return 2
    if args == ["--check"]:
        return 1 if check_all(schemas, registry) else 0
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    name, files = args[0], args[1:]
    if name not in schemas:
        print(f"no schema {name!r} in {directory} (have: {', '.join(schemas)})", file=sys.stderr)
        return 2
    validator = validator_for(schemas[name], registry)
    failures = 0
    for file in files:
        try:
            document = load_json(file)
        except (OSError, ValueError) as e:
            print(f"{file}: cannot read JSON: {e}", file=sys.stderr)
            return 2
        found = report(file, validator.iter_errors(document))
        failures += found
        print(f"{file}: {'valid' if not found else 'INVALID'} against {name}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
