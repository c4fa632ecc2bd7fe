"""The task spec schema POST /tasks documents (marketplace/api/spec_schema.py) says what the API does: every
example spec satisfies it, and specs that break a rule the validators check in code break the schema too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs  # schemathesis' own validator
import pytest

from hashgrid.config import REPO_ROOT
from hashgrid.spec import MAX_REPLICAS, MAX_UINT96, TRUST_MIN_REPLICAS, load_spec, parse_spec, spec_document
from marketplace.api.spec_schema import spec_schema

WASM = {"version": 1, "name": "ok", "runtime": "wasm", "module": "ab" * 32}


def validator() -> Any:
    schema, definitions = spec_schema()
    return jsonschema_rs.Draft202012Validator({**schema, "components": {"schemas": definitions}})


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_specs_satisfy_the_schema(path: Path) -> None:
    document = json.loads(json.dumps(spec_document(load_spec(path))))
    assert not list(validator().iter_errors(document))


@pytest.mark.parametrize(
    "change",
    [
        {"name": "-starts-with-a-dash"},
        {"name": "ok\n"},
        {"runtime": "docker", "module": None},  # docker without an image
        {"image": "sha256:" + "cd" * 32},  # wasm with an image
        {"replicas": 2, "quorum": 3},
        {"replicas": 3, "max_replicas": 2},
        {"trust": "standard", "replicas": 2},
        {"env": {"1BAD": "x"}},
        {"env": {"A": "nul\x00"}},
        {"outputs": ["../escape"]},
        {"outputs": ["/abs"]},
        {"outputs": ["a", "a"]},
        {"max_price_per_replica": str(MAX_UINT96 + 1)},
        {"max_price_per_replica": "١٢"},  # digits to str.isdigit, not ASCII
        {"resources": {"gpus": 1}},  # wasm cannot use GPUs
    ],
)
def test_specs_the_api_refuses_break_the_schema(change: dict[str, Any]) -> None:
    document = {**WASM, **change}
    assert list(validator().iter_errors(document)), f"schema accepts {document}"
    with pytest.raises(Exception):  # noqa: B017 - the spec model's own error types differ per rule
        parse_spec(document)


@pytest.mark.parametrize("level", sorted(TRUST_MIN_REPLICAS))
def test_trust_levels_agree_with_the_model(level: str) -> None:
    least = TRUST_MIN_REPLICAS[level]
    for max_replicas in (None, least - 1, least, MAX_REPLICAS):
        for replicas in (1, 2):
            document = {**WASM, "trust": level, "replicas": replicas, "max_replicas": max_replicas}
            schema_ok = not list(validator().iter_errors(document))
            try:
                parse_spec(document)
                model_ok = True
            except Exception:
                model_ok = False
            assert schema_ok == model_ok, document


def test_amounts_on_the_edge() -> None:
    for price in (str(MAX_UINT96), "0" * 29, 2**53 - 1):
        document = {**WASM, "max_price_per_replica": price}
        assert not list(validator().iter_errors(document))
        parse_spec(document)
