"""WASM sandbox backend (wasmtime): WASI with only /in (read-only) and /out preopened, no sockets at all.

Each run gets its own Engine (about 0.2 ms with a cached, pre-compiled module) so that its epoch belongs to it
alone: the timeout timer and cancel() stop exactly this run with `engine.increment_epoch()`, the one call
wasmtime allows from another thread. Fuel (`timeout_s * fuel_per_second`) is a deterministic CPU budget: every
replica of a task runs out at the same instruction, so a FUEL outcome is reproducible where a timeout is not.

Exit codes: the guest's own exit status, 137 when stopped (fuel, epoch, cancel), 134 for any other trap.
Memory: `Store.set_limits` makes `memory.grow` fail past the limit (malloc returns NULL); wasmtime-py has no
callback to see that, so a failed run whose linear memory ended within 1/8 of the limit is reported as
KillReason.MEMORY. Peak memory is the linear memory's final size (wasm memories never shrink).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from provider.runtimes._scratch import OutputArea, check_run_id
from provider.runtimes.base import KillReason, RunRequest, RunResult
from provider.runtimes.errors import InvalidRunRequest, UnknownRun

log = logging.getLogger(__name__)

FUEL_PER_SECOND = 10_000_000_000  # above what a tight cranelift loop burns per second here (~5e9)
LOG_CAP = 16 * 1024 * 1024  # stdout / stderr bytes kept in the RunResult
EXIT_KILLED = 137
EXIT_TRAP = 134
_MIB = 1024 * 1024
_MODULE_CACHE_SIZE = 32


class _Stopped(Exception):
    """Cancelled or timed out before the module even started."""

    def __init__(self, reason: KillReason) -> None:
        super().__init__(reason)
        self.reason = reason


def _config() -> wasmtime.Config:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    return config


class _Output:
    """stdout and stderr kept in memory up to LOG_CAP each (the rest is dropped, so a chatty module costs
    neither disk nor unbounded memory), plus the combined stream for logs()."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.chunks: list[bytes] = []
        self.changed = threading.Condition()
        self.closed = False

    def writer(self, buffer: bytearray) -> Callable[[bytes], int]:
        def write(data: bytes) -> int:
            room = LOG_CAP - len(buffer)
            if room > 0:
                kept = bytes(data[:room])
                with self.changed:
                    buffer.extend(kept)
                    self.chunks.append(kept)
                    self.changed.notify_all()
            return len(data)  # the guest's write succeeds even when dropped, as with a full pipe drained

        return write

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()


@dataclass
class _WasmRun:
    """One run: prepared in start(), executed by its own thread, reported by wait()."""

    request: RunRequest
    engine: wasmtime.Engine
    module: wasmtime.Module
    area: OutputArea
    fuel: int
    thread: threading.Thread | None = None
    timer: threading.Timer | None = None
    kill_reason: KillReason | None = None
    finished: bool = False
    result: RunResult | None = None
    error: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    output: _Output = field(default_factory=lambda: _Output())


class WasmRuntime:
    """Runs WASI command modules (`_start`) in wasmtime, each in a thread so start/wait/cancel work."""

    name = "wasm"

    def __init__(self, *, fuel_per_second: int = FUEL_PER_SECOND) -> None:
        self.fuel_per_second = fuel_per_second
        self._compile_engine = wasmtime.Engine(_config())
        self._modules: OrderedDict[str, bytes] = OrderedDict()
        self._modules_lock = threading.Lock()
        self._runs: dict[str, _WasmRun] = {}
        self._runs_lock = threading.Lock()

    def available(self) -> bool:
        """wasmtime is a library we ship: it works wherever this module imports."""
        return True

    # -- Runtime protocol ----------------------------------------------------------------------------------

    def start(self, request: RunRequest) -> str:
        """Load (compile once, then from cache) the module and start it in a thread of its own."""
        run_id = check_run_id(request.run_id)
        if request.module_path is None or not request.module_path.is_file():
            raise InvalidRunRequest(
                f"wasm run {run_id} needs a module file, got {request.module_path}", run_id=run_id
            )
        if not request.input_dir.is_dir():
            raise InvalidRunRequest(f"input dir {request.input_dir} does not exist", run_id=run_id)
        if request.limits.network:
            raise InvalidRunRequest(
                "the wasm runtime has no network: a task that needs it must run under docker", run_id=run_id
            )
        with self._runs_lock:
            if run_id in self._runs:
                raise InvalidRunRequest(f"run {run_id} is already running", run_id=run_id)
        engine = wasmtime.Engine(_config())
        try:
            module = wasmtime.Module.deserialize(engine, self._compiled(request.module_path))
        except wasmtime.WasmtimeError as exc:
            raise InvalidRunRequest(
                f"{request.module_path} is not a valid wasm module: {exc}", run_id=run_id
            ) from exc
        limits = request.limits
        area = OutputArea(run_id, limits.output_mb * _MIB, os.getuid(), os.getgid())
        run = _WasmRun(
            request, engine, module, area, fuel=max(1, int(limits.timeout_s * self.fuel_per_second))
        )
        with self._runs_lock:
            self._runs[run_id] = run
        run.thread = threading.Thread(target=self._execute, args=(run,), name=f"wasm-{run_id}", daemon=True)
        run.timer = threading.Timer(limits.timeout_s, self._interrupt, (run, KillReason.TIMEOUT))
        run.timer.daemon = True
        run.thread.start()
        run.timer.start()
        return run_id

    def wait(self, handle: str) -> RunResult:
        """Join the run's thread, copy /out (or refuse it when over the cap) and delete the scratch dir."""
        run = self._get(handle)
        assert run.thread is not None
        try:
            run.thread.join()
            if run.error is not None:
                raise run.error
            assert run.result is not None
            result = run.result
            if run.area.over_cap():
                if result.kill_reason is not KillReason.CANCELLED:
                    result.kill_reason = KillReason.OUTPUT_TOO_LARGE
            else:
                run.area.export(run.request.output_dir)
            return result
        finally:
            if run.timer is not None:
                run.timer.cancel()
            with self._runs_lock:
                self._runs.pop(handle, None)
            run.area.close()

    def cancel(self, handle: str) -> None:
        """Interrupt the run at its next epoch check; wait() then reports KillReason.CANCELLED."""
        self._interrupt(self._get(handle), KillReason.CANCELLED)

    def logs(self, handle: str) -> Iterator[bytes]:
        """Follow the module's stdout and stderr writes, in order, until the run ends."""
        output = self._get(handle).output
        sent = 0
        while True:
            with output.changed:
                while not output.closed and len(output.chunks) <= sent:
                    output.changed.wait()
                chunks, closed = output.chunks[sent:], output.closed
            sent += len(chunks)
            yield from chunks
            if closed and not chunks:
                return

    # -- internals -------------------------------------------------------------------------------------------

    def _compiled(self, path: Path) -> bytes:
        """Compiled module bytes, cached by the module's sha256 (callers copy modules to per-run paths)."""
        wasm = path.read_bytes()
        key = hashlib.sha256(wasm).hexdigest()
        with self._modules_lock:
            if key in self._modules:
                self._modules.move_to_end(key)
                return self._modules[key]
        data = wasmtime.Module(self._compile_engine, wasm).serialize()
        with self._modules_lock:
            self._modules[key] = data
            while len(self._modules) > _MODULE_CACHE_SIZE:
                self._modules.popitem(last=False)
        return data

    def _get(self, handle: str) -> _WasmRun:
        with self._runs_lock:
            run = self._runs.get(handle)
        if run is None:
            raise UnknownRun(f"wasm: no running task {handle}", run_id=handle)
        return run

    def _interrupt(self, run: _WasmRun, reason: KillReason) -> None:
        with run.lock:
            if run.finished or run.kill_reason is not None:
                return
            run.kill_reason = reason
            run.engine.increment_epoch()
        log.info("run %s interrupted: %s", run.request.run_id, reason)

    def _execute(self, run: _WasmRun) -> None:
        """Thread body: instantiate and call `_start`, translating exits and traps into a RunResult."""
        request, limits = run.request, run.request.limits
        wall0, cpu0 = time.monotonic(), time.thread_time()
        exit_code, kill_reason, note = 0, None, ""
        store = wasmtime.Store(run.engine)
        instance = None
        try:
            store.set_limits(memory_size=limits.memory_mb * _MIB, instances=1, memories=1, tables=4)
            store.set_fuel(run.fuel)
            with run.lock:  # an interrupt before this point would not count for the deadline: look at it here
                store.set_epoch_deadline(1)
                early = run.kill_reason
            wasi = wasmtime.WasiConfig()
            assert request.module_path is not None
            wasi.argv = list(request.command) or [request.module_path.name]
            wasi.env = sorted(request.env.items())
            wasi.preopen_dir(str(request.input_dir.resolve()), "/in", fs_mutable=False)
            wasi.preopen_dir(str(run.area.out), "/out", fs_mutable=True)
            wasi.stdout_custom = run.output.writer(run.output.stdout)
            wasi.stderr_custom = run.output.writer(run.output.stderr)
            store.set_wasi(wasi)
            linker = wasmtime.Linker(run.engine)
            linker.define_wasi()
            try:
                if early is not None:
                    raise _Stopped(early)
                instance = linker.instantiate(store, run.module)
                start = instance.exports(store)["_start"]
                assert isinstance(start, wasmtime.Func)
                start(store)
            except _Stopped as exc:
                exit_code, kill_reason = EXIT_KILLED, exc.reason
            except wasmtime.ExitTrap as exc:
                exit_code = exc.code
            except wasmtime.Trap as exc:
                if exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
                    exit_code, kill_reason = EXIT_KILLED, KillReason.FUEL
                elif exc.trap_code == wasmtime.TrapCode.INTERRUPT:
                    exit_code, kill_reason = EXIT_KILLED, run.kill_reason or KillReason.TIMEOUT
                else:
                    exit_code, note = EXIT_TRAP, f"wasm trap: {exc.message}\n"
            except (wasmtime.WasmtimeError, KeyError) as exc:  # instantiation refused, no _start export
                exit_code, note = EXIT_TRAP, f"wasm instantiation failed: {exc}\n"
            with run.lock:
                run.finished = True
                if run.kill_reason is not None and kill_reason is None and exit_code != 0:
                    kill_reason = run.kill_reason
            peak = _linear_memory(store, instance)
            limit = limits.memory_mb * _MIB
            if kill_reason is None and exit_code != 0 and (peak >= limit - limit // 8 or "limit" in note):
                kill_reason = KillReason.MEMORY
            stdout = bytes(run.output.stdout)
            stderr = bytes(run.output.stderr) + note.encode()
            run.result = RunResult(
                exit_code=exit_code,
                kill_reason=kill_reason,
                wall_seconds=time.monotonic() - wall0,
                cpu_seconds=time.thread_time() - cpu0,
                peak_memory_mb=peak / _MIB,
                stdout=stdout,
                stderr=stderr,
            )
        except BaseException as exc:  # reported by wait(), never lost in the thread
            run.error = exc
        finally:
            with run.lock:
                run.finished = True
            run.output.close()
            if run.timer is not None:
                run.timer.cancel()


def _linear_memory(store: wasmtime.Store, instance: wasmtime.Instance | None) -> int:
    if instance is None:
        return 0
    memory = instance.exports(store).get("memory")
    return memory.data_len(store) if isinstance(memory, wasmtime.Memory) else 0
