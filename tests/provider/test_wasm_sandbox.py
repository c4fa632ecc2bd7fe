"""The wasmtime sandbox against misbehaving modules: fuel, epoch timeout, memory and output caps, preopens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider.runtimes import get_runtime
from provider.runtimes._scratch import POOL_PREFIX, scratch_root
from provider.runtimes.base import KillReason, RunResult
from provider.runtimes.errors import InvalidRunRequest
from provider.runtimes.wasm import LOG_CAP, WasmRuntime
from tests.provider.conftest import ROOT, TaskDirs, leftovers


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


def test_a_chatty_module_is_captured_and_streamed_whole(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    """20,000 unbuffered writes: every line is in the result and in the stream, stderr apart."""
    request = task_dirs.request("wasm", module=wasm_modules["probe"], command=("probe", "chatty", "20000"))
    handle = backend.start(request)
    streamed = b"".join(backend.logs(handle))
    result = backend.wait(handle)
    lines = result.stdout.splitlines()
    assert (result.exit_code, result.stderr, len(lines)) == (0, b"start\n", 20_000)
    assert [int(line.split()[0]) for line in lines] == list(range(20_000))
    assert sorted(streamed.splitlines(keepends=True)) == sorted(
        result.stdout.splitlines(keepends=True) + [b"start\n"]
    )


def test_logs_past_the_cap_are_cut_and_the_run_still_succeeds(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    """stdout + stderr are capped together at LOG_CAP (memory on the provider); the task is not failed."""
    lines = LOG_CAP // 100 + 50_000  # ~5 MB past the cap
    request = task_dirs.request("wasm", module=wasm_modules["probe"], command=("probe", "chatty", str(lines)))
    result = backend.wait(backend.start(request))
    assert (result.exit_code, result.kill_reason, result.stderr) == (0, None, b"start\n")
    assert LOG_CAP - 2 * 4096 <= len(result.stdout) + len(result.stderr) <= LOG_CAP
    assert result.stdout.startswith(b"000000000 ")


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


# -- the shared engine, its epoch ticker, the run pool and the pooled /out mounts ---------------------------


def test_cancel_and_timeout_stop_only_their_own_run(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    """All runs share one Engine: cancelling one must not touch another, which runs on to its own timeout."""
    slow = backend.start(
        task_dirs.request("wasm", module=wasm_modules["probe"], command=("probe", "busy"), timeout_s=1.5)
    )
    doomed = backend.start(
        task_dirs.request("wasm", module=wasm_modules["probe"], command=("probe", "busy"), timeout_s=30)
    )
    time.sleep(0.2)
    backend.cancel(doomed)
    cancelled = backend.wait(doomed)
    timed_out = backend.wait(slow)
    assert (cancelled.exit_code, cancelled.kill_reason) == (137, KillReason.CANCELLED)
    assert cancelled.wall_seconds < 1.0
    assert (timed_out.exit_code, timed_out.kill_reason) == (137, KillReason.TIMEOUT), timed_out.wall_seconds
    assert 1.4 <= timed_out.wall_seconds < 5


def test_a_run_proceeds_in_the_background_before_wait(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    """start() does not block, yet the run goes ahead without wait() (a pool worker picks it up)."""
    handle = backend.start(task_dirs.request("wasm", module=wasm_modules["wordfreq"], command=("wordfreq",)))
    assert backend._runs[handle].done.wait(10)
    result = backend.wait(handle)
    assert (result.exit_code, result.kill_reason) == (0, None)
    assert b"words 11\n" in (task_dirs.output_dir / "result.txt").read_bytes()


def test_pooled_out_is_emptied_and_still_capped_on_reuse(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    """A recycled /out tmpfs holds nothing of the previous run, and the kernel still refuses writes past the
    cap while the task runs (exit 4 = the probe saw its write fail), not just a check afterwards."""
    outs = [task_dirs.input_dir.parent / f"reuse{i}" for i in range(3)]
    for out in outs[:2]:
        request = task_dirs.request(
            "wasm",
            module=wasm_modules["probe"],
            command=("probe", "bigout", "5"),
            output_mb=2,
            output_dir=out,
        )
        result = backend.wait(backend.start(request))
        assert (result.exit_code, result.kill_reason) == (4, KillReason.OUTPUT_TOO_LARGE)
        assert not out.exists() or not any(out.iterdir())
    request = task_dirs.request(
        "wasm", module=wasm_modules["probe"], command=("probe", "escape"), output_mb=2, output_dir=outs[2]
    )
    result = backend.wait(backend.start(request))
    assert result.exit_code == 0
    assert sorted(p.name for p in outs[2].iterdir()) == ["ok.txt"]


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # none dropped in a callback
def test_ctrl_c_while_waiting_stops_the_run(
    backend: WasmRuntime, task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    """A KeyboardInterrupt during wait() (the run may be executing inline in this thread) reaches the caller
    promptly; the executor's cancel() + wait() that follow report CANCELLED and clean up."""
    handle = backend.start(
        task_dirs.request("wasm", module=wasm_modules["probe"], command=("probe", "busy"), timeout_s=30)
    )
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # a real Ctrl-C
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        backend.wait(handle)
    assert time.monotonic() - t0 < 5
    backend.cancel(handle)
    result = backend.wait(handle)
    assert (result.exit_code, result.kill_reason) == (137, KillReason.CANCELLED)


def test_interpreter_exits_cleanly_after_cancelled_and_unfinished_runs(
    task_dirs: TaskDirs, wasm_modules: dict[str, Path]
) -> None:
    """No wasmtime panic and no 'Exception ignored in Managed.__del__' at exit; no mount left behind."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from provider.runtimes.base import Limits, RunRequest
        from provider.runtimes.wasm import WasmRuntime
        rt = WasmRuntime()
        def request(run_id):
            return RunRequest(run_id=run_id, runtime="wasm", image=None,
                              module_path=Path({str(wasm_modules["probe"])!r}), command=("probe", "busy"),
                              env={{}}, input_dir=Path({str(task_dirs.input_dir)!r}),
                              output_dir=Path({str(task_dirs.output_dir)!r}), limits=Limits(timeout_s=30))
        handle = rt.start(request("exit-a-{os.getpid()}"))
        time.sleep(0.2)
        rt.cancel(handle)
        assert rt.wait(handle).kill_reason == "cancelled"
        rt.start(request("exit-b-{os.getpid()}"))  # still running at exit
        time.sleep(0.2)
        print("done")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stdout, stderr) == (0, b"done\n", b"")
    assert not list(scratch_root().glob(f"{POOL_PREFIX}{proc.pid}-*"))
