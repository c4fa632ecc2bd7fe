"""The task spec's schema as POST /tasks documents it: `TaskSpec`'s JSON schema plus the rules its validators
check in code, written as JSON Schema so that a spec the schema accepts is one the API accepts, and the other
way round.

Two rules have no JSON Schema form and stay in code only (a schema-valid spec can break them: 422): input
paths that overlap each other ('a' and 'a/b') and a command longer than 64 KiB in all.
"""

from __future__ import annotations

import copy
from typing import Any

from hashgrid.errors import SpecInvalid
from hashgrid.spec import MAX_PATH_LEN, MAX_REPLICAS, MAX_UINT96, TRUST_MIN_REPLICAS, TaskSpec

NO_NUL = "^[^\\x00]*$"
SHA256 = "^(sha256:)?[0-9a-fA-F]{64}$"
# a relative path: '/'-separated parts, none empty, '.' or '..', no NUL or backslash
_PART = r"(?:[^/\x00\\.][^/\x00\\]*|\.[^/\x00\\.][^/\x00\\]*|\.\.[^/\x00\\]+)"
RELATIVE_PATH = f"^{_PART}(?:/{_PART})*$"


def at_most(limit: int) -> str:
    """A pattern for decimal strings (ASCII digits, leading zeros allowed) of value at most `limit`, no longer
    than `limit` is."""
    digits = str(limit)
    options = [f"[0-9]{{1,{len(digits) - 1}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):
        if digit != "0":
            rest = len(digits) - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            options.append(f"{digits[:i]}[0-{int(digit) - 1}]{tail}")
    options.append(digits)
    return "^(?:" + "|".join(options) + ")$"


MAX_JSON_INT = 2**53 - 1  # (schemas.MAX_JSON_INT) amounts above it travel as decimal strings
WEI = {
    "oneOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_JSON_INT},
        {"type": "string", "pattern": at_most(MAX_UINT96)},
    ],
    "description": "amount in wei of GRID (uint96) as a decimal string (the canonical form), or as a JSON "
    "number up to 2^53-1 (above it a number may not survive a client's JSON parser exactly)",
}


def check_wire_amounts(document: dict[str, Any]) -> dict[str, Any]:
    """Refuse a price sent as a JSON number above 2^53-1 (SpecInvalid): a JavaScript client would have sent
    a rounded amount; the string form carries any uint96 exactly."""
    price = document.get("max_price_per_replica")
    if isinstance(price, int) and not isinstance(price, bool) and price > MAX_JSON_INT:
        raise SpecInvalid(
            "spec is not a valid task spec: max_price_per_replica above 2^53-1 must be a decimal string",
            errors=[{"loc": "max_price_per_replica", "msg": "amounts above 2^53-1 must be decimal strings"}],
        )
    return document


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _replica_counts() -> list[dict[str, Any]]:
    """quorum <= replicas <= max_replicas, one branch per replica count (replicas defaults to 1)."""
    branches: list[dict[str, Any]] = [
        {"not": {"required": ["replicas"]}, "properties": {"quorum": {"const": 1}}}
    ]
    for count in range(1, MAX_REPLICAS + 1):
        branches.append({
            "required": ["replicas"],
            "properties": {
                "replicas": {"const": count},
                "quorum": {"maximum": count},
                "max_replicas": _nullable({"type": "integer", "minimum": count}),
            },
        })
    return branches


def spec_schema(ref_prefix: str = "Spec") -> tuple[dict[str, Any], dict[str, Any]]:
    """(the spec's schema, its definitions named <ref_prefix><Model>) for an OpenAPI document."""
    schema = TaskSpec.model_json_schema(
        mode="validation", ref_template=f"#/components/schemas/{ref_prefix}{{model}}"
    )
    definitions = {f"{ref_prefix}{name}": value for name, value in schema.pop("$defs", {}).items()}
    props = schema["properties"]
    props["name"].update(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$")
    props["image"] = _nullable(
        {"type": "string", "pattern": r"^(?:[a-z0-9][a-z0-9._/:-]{0,254}@)?sha256:[0-9a-f]{64}$"}
    ) | {"default": None, "description": props["image"].get("description", "")}
    props["module"] = _nullable({"type": "string", "pattern": SHA256}) | {
        "default": None, "description": "wasm: sha256 of the module blob"
    }
    props["command"]["items"] = {"type": "string", "pattern": NO_NUL}
    props["env"].update(
        propertyNames={"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"},
        additionalProperties={"type": "string", "pattern": NO_NUL},
        maxProperties=256,
    )
    props["outputs"]["items"] = {"type": "string", "maxLength": MAX_PATH_LEN, "pattern": RELATIVE_PATH}
    props["outputs"]["uniqueItems"] = True
    props["max_price_per_replica"] = copy.deepcopy(WEI) | {"default": "0"}
    blob = definitions[f"{ref_prefix}InputBlob"]["properties"]
    blob["path"].update(maxLength=MAX_PATH_LEN, pattern=RELATIVE_PATH)
    blob["sha256"].update(type="string", pattern=SHA256)
    signature = definitions[f"{ref_prefix}ArtifactSignature"]["properties"]
    signature["signer"].update(pattern=r"^0x[0-9a-fA-F]{40}$")
    signature["signature"].update(pattern=r"^0x[0-9a-fA-F]{130}$")
    schema["allOf"] = [
        {  # docker: an image and a command, no module
            "if": {"properties": {"runtime": {"const": "docker"}}},
            "then": {
                "required": ["image", "command"],
                "properties": {
                    "image": {"type": "string"}, "command": {"minItems": 1}, "module": {"type": "null"}
                },
            },
        },
        {  # wasm: a module, no image, no GPUs
            "if": {"properties": {"runtime": {"const": "wasm"}}},
            "then": {
                "required": ["module"],
                "properties": {
                    "module": {"type": "string"},
                    "image": {"type": "null"},
                    "resources": {"properties": {"gpus": {"const": 0}}},
                },
            },
        },
        {"anyOf": _replica_counts()},
        *(
            {  # a trust level replaces a fixed k and needs room for its checks
                "if": {"required": ["trust"], "properties": {"trust": {"const": level}}},
                "then": {
                    "properties": {
                        "replicas": {"const": 1},
                        "quorum": {"const": 1},
                        "max_replicas": _nullable({"type": "integer", "minimum": least}),
                    }
                },
            }
            for level, least in TRUST_MIN_REPLICAS.items()
        ),
    ]
    schema["description"] = (
        "a task spec (hashgrid.spec.TaskSpec; examples/spec.schema.json). Not expressible here, checked in "
        "code (422): input paths that overlap each other, a command longer than 64 KiB in all."
    )
    return schema, definitions
