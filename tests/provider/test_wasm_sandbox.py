"""The wasmtime sandbox against misbehaving modules: fuel, epoch timeout, memory and output caps, preopens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider.runtimes import get_runtime
from provider.runtimes.base import KillReason, RunResult
from provider.runtimes.errors import InvalidRunRequest
from provider.runtimes.wasm import WasmRuntime
from tests.provider.conftest import TaskDirs, leftovers


@pytest.fixture
def backend() -> WasmRuntime:
    runtime = get_runtime("wasm")
    assert isinstance(runtime, WasmRuntime) and runtime.available()
    return runtime


@pytest.fixture(autouse=True)
def _nothing_left_behind(task_dirs: TaskDirs) -> Iterator[None]:
    yield
    assert leftovers(None, task_dirs.run_ids) == []


def run_probe(backend: WasmRuntime, task_dirs: TaskDirs, probe: Path, *args: str, **limits: Any) -> RunResult:
    request = task_dirs.request("wasm", module=probe, command=("probe", *args), **limits)
    return backend.wait(backend.start(request))


def test_same_module_gives_same_outputs(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    outputs, results = [], []
    for i in range(2):
        out = task_dirs.input_dir.parent / f"out{i}"
        request = task_dirs.request(
            "wasm", module=wasm_modules["wordfreq"], command=("wordfreq",), output_dir=out
        )
        results.append(backend.wait(backend.start(request)))
        outputs.append((out / "result.txt").read_bytes())
    assert [(r.exit_code, r.kill_reason) for r in results] == [(0, None), (0, None)]
    assert results[0].stdout == results[1].stdout and outputs[0] == outputs[1]
    assert b"words 11\n" in outputs[0] and b"top the 3\n" in outputs[0]
    assert all(r.peak_memory_mb > 0 and r.wall_seconds > 0 for r in results)


def test_no_access_outside_the_preopens(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    before = (task_dirs.input_dir / "data.txt").read_bytes()
    result = run_probe(backend, task_dirs, wasm_modules["probe"], "escape")
    lines = result.stdout.decode().splitlines()
    assert result.exit_code == 0 and len(lines) == 7
    assert [line for line in lines if line.endswith("OPEN")] == ["write /out/ok.txt OPEN"]
    assert (task_dirs.input_dir / "data.txt").read_bytes() == before
    assert sorted(p.name for p in task_dirs.input_dir.iterdir()) == ["data.txt"]


def test_stdout_and_outputs_are_captured(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    handle = backend.start(task_dirs.request("wasm", module=wasm_modules["probe"], command=("probe", "echo")))
    streamed = b"".join(backend.logs(handle))
    result = backend.wait(handle)
    data = (task_dirs.input_dir / "data.txt").read_bytes()
    assert (result.exit_code, result.stdout, result.stderr) == (0, data, b"")
    assert streamed == data
    assert (task_dirs.output_dir / "copy.txt").read_bytes() == data


def test_busy_loop_runs_out_of_fuel(task_dirs: TaskDirs, wasm_modules: dict[str, Path]) -> None:
    stingy = WasmRuntime(fuel_per_second=10_000_000)  # 30 s of timeout buys only 3e8 instructions
    result = run_probe(stingy, task_dirs, wasm_modules["probe"], "busy", timeout_s=30)
    assert (result.exit_code, result.kill_reason) == (137, KillReason.FUEL)
    assert result.wall_seconds < 10


def test_busy_loop_is_interrupted_at_its_timeout(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    result = run_probe(backend, task_dirs, wasm_modules["probe"], "busy", timeout_s=1.0)
    assert (result.exit_code, result.kill_reason) == (137, KillReason.TIMEOUT)
    assert 0.9 <= result.wall_seconds < 5 and result.cpu_seconds > 0.1


def test_memory_hog_hits_the_limit(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    result = run_probe(backend, task_dirs, wasm_modules["probe"], "hog", memory_mb=64)
    assert (result.exit_code, result.kill_reason) == (3, KillReason.MEMORY)
    assert b"malloc failed" in result.stderr and 56 <= result.peak_memory_mb <= 64


def test_output_over_the_cap_is_refused(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    result = run_probe(backend, task_dirs, wasm_modules["probe"], "bigout", "5", output_mb=2)
    assert result.kill_reason is KillReason.OUTPUT_TOO_LARGE
    assert not any(task_dirs.output_dir.glob("*"))
    ok = run_probe(backend, task_dirs, wasm_modules["probe"], "bigout", "2", output_mb=2)
    assert (ok.exit_code, ok.kill_reason) == (0, None)
    assert (task_dirs.output_dir / "big.bin").stat().st_size == 2 * 1024 * 1024


def test_cancel_interrupts_the_run(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    handle = backend.start(task_dirs.request("wasm", module=wasm_modules["probe"], command=("probe", "busy")))
    backend.cancel(handle)  # whether the module is already running or not yet started
    result = backend.wait(handle)
    assert (result.exit_code, result.kill_reason) == (137, KillReason.CANCELLED)


def test_network_and_missing_module_are_refused(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    with pytest.raises(InvalidRunRequest, match="no network"):
        backend.start(task_dirs.request("wasm", module=wasm_modules["probe"], network=True))
    with pytest.raises(InvalidRunRequest, match="needs a module"):
        backend.start(task_dirs.request("wasm", module=task_dirs.input_dir / "missing.wasm"))
