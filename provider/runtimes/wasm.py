"""WASM sandbox backend (wasmtime): WASI with only /in (read-only) and /out preopened, no sockets at all.

One Engine per process (epoch interruption + fuel), its compiled modules cached by sha256 (and the module
file's sha256 by its stat identity), one pre-linked InstancePre per module. One ticker thread increments the
epoch every TICK_S while any run is active; every run's Store has an epoch-deadline callback that fires on
each tick and stops that run only (the callback returns an error: a trap in that store) when its
own wall-clock deadline has passed (KillReason.TIMEOUT) or cancel() flagged it (KillReason.CANCELLED); else
it continues for another tick. So timeout and cancel take effect within one tick (10 ms), and other runs
sharing the Engine are untouched. Fuel (`timeout_s * fuel_per_second`) is a deterministic CPU budget: every
replica of a task runs out at the same instruction, so a FUEL outcome is reproducible where a timeout is not.

Where a run executes: start() registers it and returns at once; wait() claims a run that no worker has
picked up yet and runs it in the calling thread (executor.py calls wait() right after start()). A run that
nobody claims within a tick is handed to a pool of worker threads by the ticker, so start() alone does run
it in the background, at most a tick or two later. Not waking a worker on every start() saves the thread
hand-off and GIL churn that cost ~0.1 ms of a 1 ms task (bench.runtime); the ticker keeps ticking for
LINGER_S after the last run ends, so back-to-back runs do not wake it either. While such an inline run
executes in the main thread, SIGINT is deferred: a handler that only flags the run (no exception can then be
raised inside a ctypes callback, where Python would print and drop it) lets the epoch callback stop it as
CANCELLED within a tick; once the run is cleaned up, the previous handler is called, so wait() raises its
KeyboardInterrupt (a later cancel() is a no-op and wait() returns the result).

Exit codes: the guest's own exit status, 137 when stopped (fuel, epoch, cancel), 134 for any other trap.
Memory: `Store.set_limits` makes `memory.grow` fail past the limit (malloc returns NULL); wasmtime-py has no
callback to see that, so a failed run whose linear memory ended within 1/8 of the limit is reported as
KillReason.MEMORY. Peak memory is the linear memory's final size (wasm memories never shrink).
/out: a pooled, capped tmpfs (see _scratch.OutputArea.pooled); stdout and stderr: two files on the area's
second tmpfs, LOG_CAP together (see _Output). Stores are closed after each run, and the
Engine and its modules at interpreter exit, so no wasmtime object is finalized after wasmtime's own globals.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import itertools
import logging
import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from provider.runtimes._scratch import OutputArea, check_run_id
from provider.runtimes.base import KillReason, RunRequest, RunResult
from provider.runtimes.errors import InvalidRunRequest, UnknownRun

log = logging.getLogger(__name__)

# Fuel is a backstop behind the wall-clock timeout (epoch interruption), so it must outlast a second of the
# fastest loop: a tight cranelift loop burned ~5e9 a second on a loaded 2-core box and 13.6e9 on a quiet one
# (2026-12-04), where 1e10 ran out before a 1 s timeout. A run stopped by either hashes alike (results.py).
FUEL_PER_SECOND = 40_000_000_000
LOG_CAP = 16 * 1024 * 1024  # stdout + stderr bytes kept per run (as docker's json-file log)
LOG_POLL_S = 0.05  # how often logs() looks for new bytes in a running task's log files
_LONG_LINE = 64 * 1024
EXIT_KILLED = 137
EXIT_TRAP = 134
_MIB = 1024 * 1024
_MODULE_CACHE_SIZE = 32
TICK_S = 0.01  # epoch period: timeout and cancel take effect within one tick
LINGER_S = 1.0  # the ticker idles this long after the last run before it sleeps until the next add()
_RACY_S = 2.0  # a module file changed this close to when it was hashed is hashed again (as git's racy check)


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
    """A run's stdout and stderr, LOG_CAP bytes together at most, and what logs() follows.

    Normally the module writes them to two files on the area's capped `logs/` tmpfs (wasmtime writes a file
    directly; a Python callback costs a thread hand-off per write, ~70 µs, a fifth of a small task), which
    logs() polls while the run lasts and load() reads when it ends; past the cap, writes fail with ENOSPC.
    Where no tmpfs can be mounted, writer() callbacks keep them in memory and drop what is over the cap."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.chunks: list[bytes] = []
        self.changed = threading.Condition()
        self.closed = False
        self.files: tuple[Path, Path] | None = (
            None  # stdout and stderr files, when the module writes to files
        )

    def load(self) -> None:
        """After the run: the files' contents are the captured stdout and stderr."""
        if self.files is not None:
            stderr = _read_from(self.files[1], 0, LOG_CAP)  # errors first: they matter more when over the cap
            stdout = _read_from(self.files[0], 0, LOG_CAP - len(stderr))
            with self.changed:
                self.stdout[:], self.stderr[:] = stdout, stderr

    def writer(self, buffer: bytearray) -> Callable[[bytes], int]:
        def write(data: bytes) -> int:
            room = LOG_CAP - len(self.stdout) - len(self.stderr)
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


_DeadlineCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t),
)
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


@dataclass
class _WasmRun:
    """One run: prepared in start(), executed by a worker or inline in wait(), reported by wait()."""

    request: RunRequest
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    area: OutputArea
    fuel: int
    deadline: float  # time.monotonic() past which the run is stopped (TIMEOUT)
    dispatch: Callable[[_WasmRun], None] | None = None  # to a worker, if unclaimed after a tick
    created: float = field(default_factory=time.monotonic)
    key: int = 0
    claimed: bool = False
    dispatched: bool = False
    collected: bool = False  # /out checked, exported and its area released
    kill_reason: KillReason | None = None
    finished: bool = False
    sigint: bool = False  # a Ctrl-C arrived during this inline run (set by the deferring handler, lock-free)
    interrupted: BaseException | None = None  # what the deferred SIGINT handler raised, for wait() to raise
    result: RunResult | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    output: _Output = field(default_factory=lambda: _Output())

    def claim(self) -> bool:
        with self.lock:
            if self.claimed:
                return False
            self.claimed = True
            return True


class _Shared:
    """The per-process Engine, linker, module cache, epoch ticker and the runs its callback can stop."""

    def __init__(self) -> None:
        self.engine = wasmtime.Engine(_config())
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self.modules: OrderedDict[str, tuple[wasmtime.Module, wasmtime.InstancePre]] = OrderedDict()
        self.hashes: dict[tuple[int, ...], str] = {}  # module file stat identity -> sha256
        self.lock = threading.Lock()
        self.runs: dict[int, _WasmRun] = {}  # active runs, by the key given to the epoch callback
        self.keys = itertools.count(1)
        self.tick = threading.Condition()
        self.ticker: threading.Thread | None = None
        self.closed = False
        self.callback = _DeadlineCallback(self._on_deadline)

    # -- modules --

    def module(self, path: Path) -> tuple[wasmtime.Module, wasmtime.InstancePre]:
        """Compiled module and its pre-linked instance, by sha256 of the file's bytes."""
        key = self._sha256(path)
        with self.lock:
            cached = self.modules.get(key)
            if cached is not None:
                self.modules.move_to_end(key)
                return cached
        module = wasmtime.Module(self.engine, path.read_bytes())
        pair = (module, self.linker.instantiate_pre(module))
        with self.lock:
            self.modules[key] = pair
            while len(self.modules) > _MODULE_CACHE_SIZE:
                self.modules.popitem(last=False)  # closed by the GC once no run holds it
        return pair

    def _sha256(self, path: Path) -> str:
        """sha256 of the file; cached by (dev, inode, size, mtime, ctime) when the file was last changed well
        before it was hashed (so a change or a new file in its place, which sets a later ctime, misses)."""
        st = os.stat(path)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self.lock:
            known = self.hashes.get(ident)
        if known is not None:
            return known
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if os.stat(path).st_ctime_ns == st.st_ctime_ns and time.time() - st.st_ctime_ns / 1e9 > _RACY_S:
            with self.lock:
                if len(self.hashes) > 4 * _MODULE_CACHE_SIZE:
                    self.hashes.clear()
                self.hashes[ident] = digest
        return digest

    # -- runs and the epoch --

    def add(self, run: _WasmRun) -> None:
        with self.tick:
            run.key = next(self.keys)
            self.runs[run.key] = run
            if self.ticker is None:
                self.ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
                self.ticker.start()
            self.tick.notify()  # a no-op unless the ticker is asleep (idle for LINGER_S)

    def remove(self, run: _WasmRun) -> None:
        with self.tick:
            self.runs.pop(run.key, None)

    def _tick(self) -> None:
        idle_since: float | None = None
        while True:
            with self.tick:
                now = time.monotonic()
                if self.runs:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= LINGER_S:
                    while not self.runs and not self.closed:
                        self.tick.wait()
                    idle_since = None
                if self.closed:
                    return
                due = [run for run in self.runs.values() if _unclaimed_for(run, now) >= TICK_S]
            self._dispatch(due)
            time.sleep(TICK_S)
            with self.tick:
                if self.closed:
                    return
                self.engine.increment_epoch()

    @staticmethod
    def _dispatch(runs: list[_WasmRun]) -> None:
        """Hand runs nobody waited for to their runtime's workers (each once)."""
        for run in runs:
            if not run.dispatched and run.dispatch is not None:
                run.dispatched = True
                run.dispatch(run)

    def _on_deadline(self, _context: object, env: int | None, delta: Any, kind: Any) -> int:
        """Epoch callback (in the run's own thread): stop this run, or give it one more tick."""
        try:
            run = self.runs.get(env or 0)
            if run is not None:
                with run.lock:
                    if run.kill_reason is None and run.sigint:
                        run.kill_reason = KillReason.CANCELLED
                    if run.kill_reason is None and time.monotonic() >= run.deadline:
                        run.kill_reason = KillReason.TIMEOUT
                    reason = run.kill_reason
                if reason is not None:
                    return _error(f"hashgrid: run stopped ({reason})")
            delta[0] = 1
            kind[0] = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
            return 0
        except BaseException:  # nothing may escape a ctypes callback: stop the run rather than drop it
            run = self.runs.get(env or 0)
            if run is not None:
                run.sigint = True
            return _error("hashgrid: run interrupted")

    def close(self) -> None:
        """At exit: stop every run, then free the Engine and modules while wasmtime can still do it."""
        with self.tick:
            self.closed = True
            runs = list(self.runs.values())
            self.tick.notify_all()
        for run in runs:
            with run.lock:
                run.kill_reason = run.kill_reason or KillReason.CANCELLED
        self._dispatch([run for run in runs if not run.claimed])  # a worker stops each before it starts
        if self.ticker is not None:
            self.ticker.join(1)
        end = time.monotonic() + 2
        while not all(run.done.is_set() for run in runs) and time.monotonic() < end:
            self.engine.increment_epoch()  # the ticker is gone: tick here so their callbacks stop them
            time.sleep(TICK_S)
        if not all(run.done.is_set() for run in runs):
            log.warning(
                "wasm runs still executing at exit: leaking the engine rather than freeing it under them"
            )
            for obj in [self.engine, self.linker, *(o for pair in self.modules.values() for o in pair)]:
                obj._consume()
            return
        with self.lock:
            pairs = list(self.modules.values())
            self.modules.clear()
        for module, pre in pairs:
            pre.close()
            module.close()
        self.linker.close()
        self.engine.close()


def _follow_files(output: _Output) -> Iterator[bytes]:
    """Poll the log files every LOG_POLL_S while the run lasts; then the rest from what load() captured."""
    sent = [0, 0]
    while True:
        with output.changed:
            if not output.closed:
                output.changed.wait(LOG_POLL_S)
            closed = output.closed
        if closed:  # complete in memory now (the files may already be emptied for the next run)
            for captured, offset in ((output.stdout, sent[0]), (output.stderr, sent[1])):
                if len(captured) > offset:
                    yield bytes(captured[offset:])
            return
        for i, path in enumerate(output.files or ()):
            chunk = _whole_lines(_read_from(path, sent[i], LOG_CAP - sent[i]))
            if chunk:
                sent[i] += len(chunk)
                yield chunk


def _whole_lines(data: bytes) -> bytes:
    """Up to the last newline (a line still being written waits for the next poll), so stdout and stderr
    interleave by whole lines; a very long unfinished line is passed on as it is."""
    end = data.rfind(b"\n") + 1
    return data[:end] if end or len(data) < _LONG_LINE else data


def _read_from(path: Path, offset: int, limit: int) -> bytes:
    """Up to `limit` bytes of a log file from `offset` (none while the module has not created it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    try:
        return os.pread(fd, max(0, limit), offset)
    finally:
        os.close(fd)


def _unclaimed_for(run: _WasmRun, now: float) -> float:
    """How long a run has waited for wait() or a worker to claim it (0 once claimed or dispatched)."""
    return 0.0 if run.claimed or run.dispatched else now - run.created


def _error(message: str) -> int:
    return ctypes.cast(ffi.wasmtime_error_new(message.encode()), ctypes.c_void_p).value or 0


_shared_lock = threading.Lock()
_shared_state: _Shared | None = None


def _shared() -> _Shared:
    global _shared_state
    with _shared_lock:
        if _shared_state is None:
            _shared_state = _Shared()
            atexit.register(_shared_state.close)
        return _shared_state


class WasmRuntime:
    """Runs WASI command modules (`_start`) in wasmtime: in a pool worker, or inline in wait() (see above)."""

    name = "wasm"

    def __init__(self, *, fuel_per_second: int = FUEL_PER_SECOND) -> None:
        self.fuel_per_second = fuel_per_second
        self._shared = _shared()
        self._runs: dict[str, _WasmRun] = {}
        self._runs_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_WasmRun] = queue.SimpleQueue()
        self._idle = 0  # workers waiting on the queue and not yet promised a run

    def available(self) -> bool:
        """wasmtime is a library we ship: it works wherever this module imports."""
        return True

    # -- Runtime protocol ----------------------------------------------------------------------------------

    def start(self, request: RunRequest) -> str:
        """Load (compile once, then from cache) the module and register the run; returns at once."""
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
        try:
            module, pre = self._shared.module(request.module_path)
        except wasmtime.WasmtimeError as exc:
            raise InvalidRunRequest(
                f"{request.module_path} is not a valid wasm module: {exc}", run_id=run_id
            ) from exc
        limits = request.limits
        area = OutputArea.pooled(
            run_id, limits.output_mb * _MIB, os.getuid(), os.getgid(), log_cap_bytes=LOG_CAP
        )
        run = _WasmRun(
            request,
            module,
            pre,
            area,
            fuel=max(1, int(limits.timeout_s * self.fuel_per_second)),
            deadline=time.monotonic() + limits.timeout_s,
            dispatch=self._to_worker,
        )
        if area.logs_mounted:
            run.output.files = (area.logs / "stdout", area.logs / "stderr")
        with self._runs_lock:
            self._runs[run_id] = run
        self._shared.add(run)  # gives it its callback key; from here the ticker may hand it to a worker
        return run_id

    def wait(self, handle: str) -> RunResult:
        """Run it here if no worker has yet, else wait for it; copy /out (or refuse it when over the cap)."""
        run = self._get(handle)
        if run.claim():
            with _sigint_deferred(run):
                self._execute(run)
        else:
            run.done.wait()
        try:
            if run.result is not None and not run.collected:
                if run.area.over_cap():
                    if run.result.kill_reason is not KillReason.CANCELLED:
                        run.result.kill_reason = KillReason.OUTPUT_TOO_LARGE
                else:
                    run.area.export(run.request.output_dir)
        finally:
            if not run.collected:
                run.collected = True
                run.area.close()
            interrupted, run.interrupted = run.interrupted, None
            if interrupted is None:
                with self._runs_lock:
                    self._runs.pop(handle, None)
        if interrupted is not None:  # kept registered: the caller's cancel() + wait() get the result
            raise interrupted
        if run.error is not None:
            raise run.error
        assert run.result is not None
        return run.result

    def cancel(self, handle: str) -> None:
        """Stop the run at its next epoch tick (or before it starts); wait() then reports CANCELLED."""
        run = self._get(handle)
        with run.lock:
            if run.finished or run.kill_reason is not None:
                return
            run.kill_reason = KillReason.CANCELLED
        log.info("run %s cancelled", run.request.run_id)

    def logs(self, handle: str) -> Iterator[bytes]:
        """Follow the module's stdout and stderr until the run ends (from files: each poll's new whole lines
        of stdout, then of stderr; from callbacks: every write in order)."""
        output = self._get(handle).output
        if output.files is not None:
            yield from _follow_files(output)
            return
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

    def _to_worker(self, run: _WasmRun) -> None:
        """Queue a run for the pool, starting a worker when none is idle."""
        with self._runs_lock:
            self._queue.put(run)
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # that worker is promised this run
        if spawn:
            threading.Thread(target=self._worker, name="wasm-worker", daemon=True).start()

    def _worker(self) -> None:
        while True:
            run = self._queue.get()
            if run.claim():
                self._execute(run)
            with self._runs_lock:
                self._idle += 1

    def _get(self, handle: str) -> _WasmRun:
        with self._runs_lock:
            run = self._runs.get(handle)
        if run is None:
            raise UnknownRun(f"wasm: no running task {handle}", run_id=handle)
        return run

    def _execute(self, run: _WasmRun) -> None:
        """Instantiate and call `_start`, translating exits and traps into a RunResult (never raises)."""
        try:
            self._execute_in(run)
        except BaseException as exc:  # reported by wait(), never lost in a worker
            run.error = exc
        finally:
            with run.lock:
                run.finished = True
            self._shared.remove(run)
            run.output.close()
            run.done.set()

    def _execute_in(self, run: _WasmRun) -> None:
        request, limits = run.request, run.request.limits
        wall0, cpu0 = time.monotonic(), time.thread_time()
        exit_code, kill_reason, note = 0, None, ""
        assert run.key, "run not registered with the epoch callback"
        store = wasmtime.Store(self._shared.engine)
        instance = None
        try:
            store.set_limits(memory_size=limits.memory_mb * _MIB, instances=1, memories=1, tables=4)
            store.set_fuel(run.fuel)
            ffi.wasmtime_store_epoch_deadline_callback(
                store.ptr(), self._shared.callback, ctypes.c_void_p(run.key), _NO_FINALIZER
            )
            store.set_epoch_deadline(1)
            wasi = wasmtime.WasiConfig()
            assert request.module_path is not None
            wasi.argv = list(request.command) or [request.module_path.name]
            if request.env:
                wasi.env = sorted(request.env.items())
            wasi.preopen_dir(os.path.abspath(request.input_dir), "/in", fs_mutable=False)
            wasi.preopen_dir(str(run.area.out), "/out", fs_mutable=True)
            if run.output.files is not None:
                wasi.stdout_file, wasi.stderr_file = (str(path) for path in run.output.files)
            else:
                wasi.stdout_custom = run.output.writer(run.output.stdout)
                wasi.stderr_custom = run.output.writer(run.output.stderr)
            store.set_wasi(wasi)
            try:
                with run.lock:
                    early = run.kill_reason
                if early is None and time.monotonic() >= run.deadline:
                    early = KillReason.TIMEOUT
                if early is not None:
                    raise _Stopped(early)
                instance = run.pre.instantiate(store)
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
            except (wasmtime.WasmtimeError, KeyError) as exc:  # stopped by the epoch callback, or refused
                with run.lock:
                    stopped = run.kill_reason
                if stopped is not None:
                    exit_code, kill_reason = EXIT_KILLED, stopped
                else:
                    exit_code, note = EXIT_TRAP, f"wasm instantiation failed: {exc}\n"
            with run.lock:
                run.finished = True
                if run.kill_reason is not None and kill_reason is None and exit_code != 0:
                    kill_reason = run.kill_reason
            peak = _linear_memory(store, instance)
            run.output.load()
            limit = limits.memory_mb * _MIB
            if kill_reason is None and exit_code != 0 and (peak >= limit - limit // 8 or "limit" in note):
                kill_reason = KillReason.MEMORY
            run.result = RunResult(
                exit_code=exit_code,
                kill_reason=kill_reason,
                wall_seconds=time.monotonic() - wall0,
                cpu_seconds=time.thread_time() - cpu0,
                peak_memory_mb=peak / _MIB,
                stdout=bytes(run.output.stdout),
                stderr=bytes(run.output.stderr) + note.encode(),
            )
        finally:
            store.close()  # closes the WASI files (so /out can be checked and emptied) and frees the instance


@contextmanager
def _sigint_deferred(run: _WasmRun) -> Iterator[None]:
    """In the main thread: a Ctrl-C only flags the run (stopped as CANCELLED at the next tick); afterwards the
    previous handler is called with it and whatever it raises is kept in run.interrupted for wait()."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    caught: list[Any] = []

    def defer(signum: int, frame: Any) -> None:
        caught.append(frame)
        run.sigint = True  # an attribute store: no lock, as this may run inside code holding run.lock

    signal.signal(signal.SIGINT, defer)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if not caught:
        return
    if previous == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)
    elif callable(previous):
        try:
            previous(signal.SIGINT, caught[0])
        except BaseException as exc:
            run.interrupted = exc


def _linear_memory(store: wasmtime.Store, instance: wasmtime.Instance | None) -> int:
    if instance is None:
        return 0
    memory = instance.exports(store).get("memory")
    return memory.data_len(store) if isinstance(memory, wasmtime.Memory) else 0
