"""Task spec validation and the spec hash: malformed specs fail with messages that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hashgrid.errors import SpecInvalid
from hashgrid.spec import canonical_spec, load_spec, parse_spec, spec_document, spec_hash, spec_json_schema

IMAGE = "sha256:" + "ab" * 32
MODULE = "cd" * 32


def docker_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"version": 1, "name": "sort words", "runtime": "docker", "image": IMAGE,
                            "command": ["sh", "-c", "sort /in/words > /out/sorted"],
                            "inputs": [{"path": "words", "sha256": "ef" * 32, "size": 10}],
                            "outputs": ["sorted"], "replicas": 3, "quorum": 2}
    spec.update(changes)
    return spec


def wasm_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"version": 1, "name": "wc", "runtime": "wasm", "module": MODULE,
                            "command": ["wc"]}
    spec.update(changes)
    return spec


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(data)
    assert caught.value.code == "spec_invalid"
    return caught.value.message


def test_valid_specs_parse() -> None:
    spec = parse_spec(docker_spec())
    assert spec.image_id == IMAGE and spec.effective_max_replicas == 4  # k = 3 and a spare
    assert parse_spec(wasm_spec()).artifact_digest == f"sha256:{MODULE}"
    named = parse_spec(docker_spec(image=f"hashgrid/busybox@{IMAGE}"))
    assert named.image_id == IMAGE


@pytest.mark.parametrize(("change", "fragment"), [
    ({"runtime": "vm"}, "unknown runtime 'vm'"),
    ({"image": "busybox:latest"}, "tags are not accepted"),
    ({"image": None}, "needs 'image'"),
    ({"command": []}, "non-empty 'command'"),
    ({"colour": "blue"}, "colour: unknown field"),
    ({"version": 2}, "version"),
    ({"inputs": [{"path": "../etc/passwd", "sha256": "ef" * 32, "size": 1}]}, "contains '..'"),
    ({"inputs": [{"path": "/etc/passwd", "sha256": "ef" * 32, "size": 1}]}, "is absolute"),
    ({"inputs": [{"path": "a//b", "sha256": "ef" * 32, "size": 1}]}, "empty or '.' component"),
    ({"inputs": [{"path": "w", "sha256": "xyz", "size": 1}]}, "inputs.0.sha256"),
    ({"inputs": [{"path": "w", "sha256": "ef" * 32, "size": -1}]}, "inputs.0.size"),
    ({"inputs": [{"path": "a", "sha256": "ef" * 32, "size": 1},
                 {"path": "a/b", "sha256": "ef" * 32, "size": 1}]},
     "overlap"),
    ({"outputs": ["../../x"]}, "contains '..'"),
    ({"outputs": ["d", "d/e"]}, "overlap"),
    ({"quorum": 4}, "quorum (4) must be at most replicas (3)"),
    ({"max_replicas": 2}, "max_replicas (2) must be at least replicas (3)"),
    ({"replicas": 17, "quorum": 1}, "replicas"),
    ({"resources": {"timeout_s": 0}}, "resources.timeout_s"),
    ({"resources": {"memory_mb": 10**9}}, "resources.memory_mb"),
    ({"resources": {"cpus": 0}}, "resources.cpus"),
    ({"max_price_per_replica": -1}, "max_price_per_replica"),
    ({"max_price_per_replica": 1.5}, "no floats"),
    ({"max_price_per_replica": 2**96}, "max_price_per_replica"),
    ({"env": {"1BAD": "x"}}, "not a valid variable name"),
    ({"module": MODULE}, "'module' is for runtime 'wasm'"),
    ({"image_signature": {"signer": "0x12", "signature": "0x00"}}, "image_signature.signer"),
])
def test_malformed_docker_specs(change: dict[str, Any], fragment: str) -> None:
    assert fragment in problems(docker_spec(**change))


def test_wasm_spec_needs_module_and_no_gpu() -> None:
    assert "needs 'module'" in problems(wasm_spec(module=None))
    assert "cannot use GPUs" in problems(wasm_spec(resources={"gpus": 1}))


def test_not_a_mapping() -> None:
    with pytest.raises(SpecInvalid, match="must be a mapping"):
        parse_spec(["x"])


def test_hash_is_stable_across_formats_orders_and_defaults(tmp_path: Path) -> None:
    spec = docker_spec(inputs=[{"path": "b", "sha256": "ef" * 32, "size": 1},
                               {"path": "a", "sha256": "ef" * 32, "size": 2}], outputs=["z", "y"])
    explicit = dict(spec, network=False, include_stdout=False, priority=0, env={})
    reordered = dict(reversed(list(spec.items())), inputs=list(reversed(spec["inputs"])), outputs=["y", "z"])
    (tmp_path / "a.json").write_text(json.dumps(spec))
    import yaml

    (tmp_path / "b.yaml").write_text(yaml.safe_dump(reordered))
    hashes = {spec_hash(parse_spec(spec)), spec_hash(parse_spec(explicit)),
              spec_hash(load_spec(tmp_path / "a.json")), spec_hash(load_spec(tmp_path / "b.yaml"))}
    assert len(hashes) == 1
    assert spec_hash(parse_spec(docker_spec(priority=1))) not in hashes


def test_large_price_is_a_decimal_string_in_canonical_json() -> None:
    spec = parse_spec(docker_spec(max_price_per_replica=str(10**24)))
    assert b'"max_price_per_replica":"1000000000000000000000000"' in canonical_spec(spec)
    assert spec.max_price_per_replica == 10**24


def test_load_spec_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: [unclosed\n")
    with pytest.raises(SpecInvalid, match="bad.yaml is not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecInvalid, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")


def test_schema_is_exported_and_in_sync() -> None:
    schema = spec_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"version", "name", "runtime"}
    committed = Path(__file__).resolve().parents[2] / "examples" / "spec.schema.json"
    assert json.loads(committed.read_text()) == schema, "run scripts/make_examples.py to refresh the schema"


def test_a_spec_may_allow_or_exclude_providers_without_changing_other_hashes() -> None:
    a, b, c = ("0x" + d * 40 for d in "abc")
    plain = parse_spec(docker_spec())
    chosen = parse_spec(docker_spec(requirements={"providers": [c.upper().replace("0X", "0x"), a, b],
                                                  "exclude_providers": ["0x" + "d" * 40]}))
    assert chosen.requirements.providers == [a, b, c]  # normalised: lower case, sorted
    assert "providers" not in spec_document(plain)["requirements"]  # unset lists leave hashes as they were
    assert "allows 2 provider(s); replicas is 3" in problems(docker_spec(requirements={"providers": [a, b]}))
    assert "both allowed" in problems(docker_spec(requirements={"providers": [a, b, c],
                                                                "exclude_providers": [b]}))
    assert "not a 0x address" in problems(docker_spec(requirements={"exclude_providers": ["bob"]}))
