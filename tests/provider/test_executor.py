"""The executor in-process: verified inputs, refusals before anything runs, scratch dirs always removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hashgrid.content import ContentStore
from hashgrid.errors import DigestMismatch, PolicyRefused
from hashgrid.spec import TaskSpec, parse_spec
from provider.executor import execute
from provider.metering import Usage, meter, price
from provider.policy import Policy
from provider.runtimes.base import RunResult

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "examples" / "wasm" / "wordfreq.wasm"


def wasm_spec(store: ContentStore, **changes: Any) -> TaskSpec:
    module = store.put_file(MODULE)
    data = b"alpha beta beta gamma\n"
    digest = store.put_bytes(data)
    spec: dict[str, Any] = {"version": 1, "name": "wordfreq", "runtime": "wasm", "module": module,
                            "command": ["wordfreq.wasm", "/in/text/data.txt"],
                            "inputs": [{"path": "text/data.txt", "sha256": digest, "size": len(data)}],
                            "outputs": ["result.txt", "never-written"], "include_stdout": True}
    spec.update(changes)
    return parse_spec(spec)


def test_wasm_run_hashes_outputs_and_cleans_up(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    spec = wasm_spec(store)
    work = tmp_path / "work"
    runs = [execute(spec, store=store, policy=Policy(), workdir=work) for _ in range(2)]
    assert runs[0].result_hash.digest == runs[1].result_hash.digest
    document = runs[0].result_hash.document
    assert document["exit_code"] == 0 and "stdout_sha256" in document
    assert {"path": "never-written", "absent": True} in document["outputs"]
    assert runs[0].runtime == "wasm" and runs[0].usage.wall_seconds >= 0
    assert b"wrote /out/result.txt" in runs[0].logs
    assert list(work.iterdir()) == []


def test_corrupt_input_in_store_is_refused_before_running(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    spec = wasm_spec(store)
    blob = store.path_for(spec.inputs[0].sha256)
    blob.chmod(0o644)
    blob.write_bytes(b"alpha beta beta gammA\n")  # same size, other bytes
    work = tmp_path / "work"
    with pytest.raises(DigestMismatch) as caught:
        execute(spec, store=store, policy=Policy(), workdir=work)
    assert caught.value.expected == spec.inputs[0].sha256
    assert "input 'text/data.txt'" in caught.value.message
    assert list(work.iterdir()) == []


def test_corrupt_module_is_refused(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    spec = wasm_spec(store)
    assert spec.module is not None
    blob = store.path_for(spec.module)
    blob.chmod(0o644)
    blob.write_bytes(b"\0asm\1\0\0\0")
    with pytest.raises(DigestMismatch, match="wasm module"):
        execute(spec, store=store, policy=Policy(), workdir=tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []


def test_policy_refusal_runs_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    spec = wasm_spec(store)
    with pytest.raises(PolicyRefused, match="not in allowed_modules"):
        execute(spec, store=store, policy=Policy(allow_any_module=False), workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == []


def test_metering_and_price() -> None:
    result = RunResult(exit_code=0, kill_reason=None, wall_seconds=2.0, cpu_seconds=1.5, peak_memory_mb=512.0,
                       stdout=b"", stderr=b"", gpus_attached=("GPU-0",))
    usage = meter(result)
    assert usage == Usage(wall_seconds=2.0, cpu_seconds=1.5, memory_gb_seconds=1.0, gpu_seconds=2.0,
                          peak_memory_mb=512.0)
    rates = {"fixed": 100, "per_cpu_second": 10, "per_gb_second": 4, "per_gpu_second": 1000}
    assert price(usage, **rates) == 100 + 15 + 4 + 2000
    assert price(usage, **rates, cap=500) == 500
