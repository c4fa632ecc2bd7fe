"""The customer client's pieces that need no network: finding blobs locally, the price estimate, error
mapping, and the CLI's one-line errors and exit codes for bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from hashgrid.chain.deployment import Deployment
from hashgrid.cli import build_app
from hashgrid.client import (
    as_spec,
    error_from_response,
    estimate_from_prices,
    find_blobs,
)
from hashgrid.errors import Forbidden, InvalidInput, MarketplaceError, NotFound, NotReady, SpecInvalid
from hashgrid.spec import parse_spec

DATA = b"hello world\n"
MODULE = b"\0asm fake module"


def spec_doc(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {
        "version": 1, "name": "t", "runtime": "wasm", "module": hashlib.sha256(MODULE).hexdigest(),
        "command": ["m.wasm"], "inputs": [{"path": "data.txt", "sha256": hashlib.sha256(DATA).hexdigest(),
                                           "size": len(DATA)}],
        "resources": {"cpus": 1, "memory_mb": 1024, "timeout_s": 10}, "replicas": 3, "quorum": 2,
        "max_replicas": 4, "max_price_per_replica": "1000000"}
    document.update(overrides)
    return document


def test_find_blobs_by_path_then_by_digest(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_bytes(DATA)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "whatever.wasm").write_bytes(MODULE)
    (tmp_path / "decoy.txt").write_bytes(b"x" * len(DATA))
    spec = parse_spec(spec_doc())
    found = find_blobs(spec, [tmp_path])
    assert found == {spec.inputs[0].sha256: tmp_path / "data.txt",
                     spec.module: tmp_path / "sub/whatever.wasm"}
    (tmp_path / "data.txt").write_bytes(b"changed!!!!\n")  # same size, other digest: not taken
    assert spec.inputs[0].sha256 not in find_blobs(spec, [tmp_path])


def test_estimate_range_is_capped_and_includes_the_fee() -> None:
    spec = parse_spec(spec_doc())
    sheets = [{"fixed": "100", "per_cpu_second": "10", "per_gb_second": "0", "per_gpu_second": "0"},
              {"fixed": "300", "per_cpu_second": "1000000", "extra": "ignored"}]
    estimate = estimate_from_prices(spec, sheets, fee_bps=100)
    assert estimate.per_replica_low == 100  # the cheapest fixed price, no usage
    assert estimate.per_replica_high == 1_000_000  # the dearest full-timeout price, capped
    low, high = estimate
    assert (low, high) == (300 + 3, 4_000_000 + 40_000)
    assert estimate.escrow == 4 * 1_000_000 * 101 // 100
    assert estimate.providers == 2 and estimate.notes == []


def test_estimate_without_providers_and_below_every_ask() -> None:
    spec = parse_spec(spec_doc(max_price_per_replica="50"))
    none = estimate_from_prices(spec, [], fee_bps=0)
    assert (none.low, none.high) == (0, 4 * 50) and "no online provider" in none.notes[0]
    cheap = estimate_from_prices(spec, [{"fixed": "100"}], fee_bps=0)
    assert any("would not be placed" in note for note in cheap.notes)


@pytest.mark.parametrize(("status", "kind"), [(404, NotFound), (403, Forbidden), (409, NotReady),
                                              (400, InvalidInput), (502, MarketplaceError)])
def test_error_mapping_is_one_line(status: int, kind: type[Exception]) -> None:
    response = httpx.Response(status, json={"code": "x", "message": "went\nwrong"})
    error = error_from_response(response, "task 7")
    assert isinstance(error, kind)
    assert str(error) == "task 7: went wrong"


def test_spec_errors() -> None:
    with pytest.raises(InvalidInput, match="no spec file"):
        as_spec("/nonexistent/spec.yaml")
    with pytest.raises(SpecInvalid, match="quorum"):
        as_spec(spec_doc(quorum=5))
    invalid = httpx.Response(422, json={"code": "spec_invalid", "message": "bad spec"})
    assert isinstance(error_from_response(invalid, "registering"), SpecInvalid)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASHGRID_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("HASHGRID_PRIVATE_KEY", raising=False)
    runner = CliRunner()
    app = build_app()
    missing = runner.invoke(app, ["task", "submit", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and missing.output.strip().startswith("error: no spec file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nruntime: wasm\n")
    invalid = runner.invoke(app, ["task", "estimate", str(bad)])
    assert invalid.exit_code == 2 and "module" in invalid.output and len(invalid.output.splitlines()) == 1
    nokey = runner.invoke(app, ["wallet", "balance"])
    assert nokey.exit_code == 2 and "no signing key" in nokey.output
    for group in (["task"], ["wallet"], ["faucet"], ["task", "submit"], ["wallet", "new"]):
        assert runner.invoke(app, [*group, "--help"]).exit_code == 0


def test_wallet_new_writes_an_encrypted_keystore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASHGRID_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HASHGRID_KEYSTORE_PASSWORD", "pw")
    runner = CliRunner()
    app = build_app()
    made = runner.invoke(app, ["wallet", "new", "--name", "alice"])
    assert made.exit_code == 0, made.output
    keystore = tmp_path / "wallets/alice.json"
    assert keystore.is_file() and (keystore.stat().st_mode & 0o777) == 0o600
    assert made.output.splitlines()[0].startswith("0x")
    again = runner.invoke(app, ["wallet", "new", "--name", "alice"])
    assert again.exit_code == 2 and "already exists" in again.output


def test_inputs_by_path_are_hashed_from_local_files(tmp_path: Path) -> None:
    """A spec as a person writes it: inputs by path alone (or `file:`), a wasm module as a file path."""
    from hashgrid.client import load_local_spec
    from hashgrid.errors import ContentMissing, DigestMismatch

    (tmp_path / "data.txt").write_bytes(b"hello\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other/words.txt").write_bytes(b"a b c\n")
    (tmp_path / "mod.wasm").write_bytes(b"\0asm fake module")
    spec = tmp_path / "task.yaml"
    spec.write_text("version: 1\nname: t\nruntime: wasm\nmodule: mod.wasm\ncommand: [mod.wasm]\n"
                    "inputs:\n  - path: data.txt\n  - path: words.txt\n    file: other/words.txt\n")
    found: dict[str, Path] = {}
    parsed = load_local_spec(spec, found=found)
    assert parsed.module == hashlib.sha256(b"\0asm fake module").hexdigest()
    assert [(i.path, i.sha256, i.size) for i in parsed.inputs] == [
        ("data.txt", hashlib.sha256(b"hello\n").hexdigest(), 6),
        ("words.txt", hashlib.sha256(b"a b c\n").hexdigest(), 6)]
    assert found[parsed.inputs[1].sha256] == tmp_path / "other/words.txt"  # uploaded from there

    spec.write_text("version: 1\nname: t\nruntime: wasm\nmodule: mod.wasm\ninputs:\n  - path: gone.txt\n")
    with pytest.raises(ContentMissing, match="gone.txt"):
        load_local_spec(spec)
    spec.write_text("version: 1\nname: t\nruntime: wasm\nmodule: mod.wasm\ninputs:\n  - path: data.txt\n"
                    f"    sha256: {'ab' * 32}\n")
    with pytest.raises(DigestMismatch):  # a sha256 given is checked against the file
        load_local_spec(spec)


def test_from_settings_signs_with_the_cli_wallet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 deployment: Deployment) -> None:
    """`HashgridClient.from_settings()` opens the keystore `hashgrid wallet new` wrote (same customer)."""
    from hashgrid.client import HashgridClient

    monkeypatch.setenv("HASHGRID_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HASHGRID_KEYSTORE_PASSWORD", "pw")
    monkeypatch.delenv("HASHGRID_PRIVATE_KEY", raising=False)
    made = CliRunner().invoke(build_app(), ["wallet", "new"])
    assert made.exit_code == 0, made.output
    address = made.output.splitlines()[0]
    monkeypatch.setenv("HASHGRID_DEPLOYMENT_FILE", str(deployment.save(tmp_path / "deployment.json")))
    client = HashgridClient.from_settings()
    assert client.address == address
    monkeypatch.setenv("HASHGRID_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(InvalidInput, match="wrong password"):
        HashgridClient.from_settings()
