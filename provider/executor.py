"""Run one task spec end to end on this device: policy, verified inputs, sandbox, result hash, usage.

The daemon and `hashgrid provider exec` both call `execute`, so a customer's local check and a provider's
paid run hash results the same way. Every run gets a scratch dir that is removed whatever happens.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hashgrid.content import ContentStore
from hashgrid.errors import ExecutionFailed, HashgridError, PolicyRefused
from hashgrid.spec import TaskSpec, spec_hash
from provider.gpu import DETERMINISTIC_GPU_ENV, GpuSampler
from provider.metering import Usage, meter
from provider.policy import Policy, check, choose_runtime
from provider.results import ResultHash, compute_result_hash
from provider.runtimes.base import Limits, RunRequest, RunResult

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "hg-run-"


@dataclass
class Execution:
    """One finished run: the result hash to commit, what the sandbox reported, metered usage and logs."""

    spec_hash: bytes
    runtime: str
    result_hash: ResultHash
    run_result: RunResult
    usage: Usage
    logs: bytes = field(repr=False)

    @property
    def exit_code(self) -> int:
        return self.run_result.exit_code

    @property
    def kill_reason(self) -> str | None:
        reason = self.run_result.kill_reason
        return str(reason) if reason is not None else None

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary for CLIs and reports."""
        return {
            "spec_hash": "0x" + self.spec_hash.hex(),
            "runtime": self.runtime,
            "result_hash": self.result_hash.hex,
            "exit_code": self.exit_code,
            "killed": self.kill_reason,
            "usage": self.usage.to_dict(),
            "result": self.result_hash.document,
        }


def _remove_tree(path: Path) -> None:
    """Remove a scratch dir even when the task left read-only dirs behind."""

    def _retry(function: Callable[..., Any], target: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            function(target)
        except OSError:
            log.warning("could not remove %s", target)

    if path.exists():
        shutil.rmtree(path, onerror=_retry)  # onexc is 3.12+


def _lay_out_inputs(spec: TaskSpec, store: ContentStore, input_dir: Path) -> None:
    """Copy each input from the store to /in/<path>, verifying sha256 and size on the bytes copied."""
    for blob in spec.inputs:
        target = input_dir / blob.path
        target.parent.mkdir(parents=True, exist_ok=True)
        store.copy_to(blob.sha256, target, what=f"input {blob.path!r}", expected_size=blob.size)
    for directory in [input_dir, *(p for p in input_dir.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)


def limits_for(spec: TaskSpec, policy: Policy, gpus: Sequence[str] = ()) -> Limits:
    """Sandbox limits from the spec's resources (network only when the spec asks and the policy allows);
    `gpus` are the GPU UUIDs reserved for this run, exactly `resources.gpus` of them."""
    resources = spec.resources
    if len(gpus) != resources.gpus:
        raise PolicyRefused(f"resources.gpus={resources.gpus} but {len(gpus)} GPU(s) are reserved for it")
    return Limits(cpus=resources.cpus, memory_mb=resources.memory_mb, pids=resources.pids,
                  timeout_s=float(resources.timeout_s), output_mb=resources.disk_mb,
                  network=spec.network and policy.allow_network, gpus=tuple(gpus))


def env_for(spec: TaskSpec, gpus: Sequence[str]) -> dict[str, str]:
    """The run's environment: a GPU run starts from the deterministic CUDA settings, the spec's env on top."""
    return {**DETERMINISTIC_GPU_ENV, **spec.env} if gpus else dict(spec.env)


def _gpus_for(spec: TaskSpec, device: Mapping[str, Any], gpus: Sequence[str] | None) -> tuple[str, ...]:
    """The GPUs this run gets: the caller's reservation (the daemon's), else the first offered ones."""
    if not spec.resources.gpus:
        return ()
    if gpus is None:
        gpus = [str(g["uuid"]) for g in device.get("gpus") or []][: spec.resources.gpus]
    if len(gpus) < spec.resources.gpus:
        raise PolicyRefused(f"resources.gpus={spec.resources.gpus} but only {len(gpus)} GPU(s) are free")
    return tuple(gpus[: spec.resources.gpus])


def _available(spec: TaskSpec, policy: Policy) -> list[str]:
    """The backends that work here, probing only those this task could use (a probe can start a container)."""
    from provider.runtimes import get_runtime

    if spec.runtime == "wasm":
        candidates = ["wasm"]
    else:
        preference = {"runsc": ["runsc"], "docker": ["docker"], "auto": ["runsc", "docker"]}
        candidates = preference[policy.docker_runtime]
    found = []
    for name in candidates:
        if get_runtime(name).available():
            found.append(name)
            if spec.runtime == "docker":
                break  # the first working one in preference order is the one chosen
    return found


def _stream_logs(runtime: Any, handle: str, on_log: Callable[[bytes], None]) -> threading.Thread:
    def pump() -> None:
        try:
            for chunk in runtime.logs(handle):
                on_log(chunk)
        except Exception as exc:  # log streaming is best effort; the run's result does not depend on it
            log.debug("log stream of %s ended: %s", handle, exc)

    thread = threading.Thread(target=pump, name=f"logs-{handle}", daemon=True)
    thread.start()
    return thread


def execute(spec: TaskSpec, *, store: ContentStore, policy: Policy, workdir: Path,
            device: Mapping[str, Any] | None = None, available: Iterable[str] | None = None,
            on_log: Callable[[bytes], None] | None = None, run_id: str | None = None,
            on_outputs: Callable[[Path], None] | None = None,
            gpus: Sequence[str] | None = None) -> Execution:
    """Run `spec` once and return its Execution.

    Raises PolicyRefused before anything runs, DigestMismatch / ContentMissing when an input or module is
    wrong or missing, ExecutionFailed (or the backend's error) when the sandbox cannot run it. `on_outputs`
    sees the output directory after hashing and before cleanup. `gpus` are the GPU UUIDs reserved for this
    run (the daemon's allocation); without them a GPU task gets the first offered GPUs. A task
    that runs and fails (non-zero exit, killed) is not an error: it has a result hash like any other.
    """
    from provider.runtimes import get_runtime

    if spec.resources.gpus and device is None:
        from provider.detect import detect

        device = detect(workdir, volatile=False)  # a GPU task is checked against what can really attach
    check(spec, policy, device)
    reserved = _gpus_for(spec, device or {}, gpus)
    if available is None:
        available = _available(spec, policy)
    runtime_name = choose_runtime(spec, policy, available, device)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = run_id or f"hg-{uuid.uuid4().hex[:16]}"
    scratch = Path(tempfile.mkdtemp(dir=workdir, prefix=SCRATCH_PREFIX))
    try:
        input_dir = scratch / "in"
        output_dir = scratch / "out"
        input_dir.mkdir()
        output_dir.mkdir()
        output_dir.chmod(0o777)  # the sandbox user (nobody) writes here; the scratch dir itself stays 0700
        _lay_out_inputs(spec, store, input_dir)
        module_path = None
        if spec.runtime == "wasm":
            assert spec.module is not None  # validated
            module_path = scratch / "module.wasm"
            store.copy_to(spec.module, module_path, what=f"wasm module sha256:{spec.module}")
        request = RunRequest(run_id=run_id, runtime=runtime_name, image=spec.image_id,
                             module_path=module_path, command=tuple(spec.command),
                             env=env_for(spec, reserved), input_dir=input_dir, output_dir=output_dir,
                             limits=limits_for(spec, policy, reserved))
        runtime = get_runtime(runtime_name)
        sampler = GpuSampler(reserved).start()
        try:
            result = _run(runtime, request, on_log)
        finally:
            gpu_usage = sampler.stop()
        killed = str(result.kill_reason) if result.kill_reason is not None else None
        digest = compute_result_hash(exit_code=result.exit_code, output_dir=output_dir, declared=spec.outputs,
                                     stdout=result.stdout if spec.include_stdout else None, killed=killed)
        if on_outputs is not None:
            on_outputs(output_dir)  # e.g. the daemon keeps the outputs before the scratch dir goes
        usage = meter(result, gpu=gpu_usage)
        log.info("run %s (%s) exit %s result %s", run_id, runtime_name, result.exit_code, digest.hex)
        return Execution(spec_hash=spec_hash(spec), runtime=runtime_name, result_hash=digest,
                         run_result=result, usage=usage, logs=result.stdout + result.stderr)
    finally:
        _remove_tree(scratch)


def _run(runtime: Any, request: RunRequest, on_log: Callable[[bytes], None] | None) -> RunResult:
    """start + wait, cancelling the run if this process is interrupted while it waits."""
    try:
        handle = runtime.start(request)
    except HashgridError:
        raise
    except Exception as exc:
        raise ExecutionFailed(f"{request.runtime} could not start run {request.run_id}: {exc}",
                              runtime=request.runtime) from exc
    pump = _stream_logs(runtime, handle, on_log) if on_log is not None else None
    try:
        result: RunResult = runtime.wait(handle)
    except BaseException:
        try:
            runtime.cancel(handle)
            runtime.wait(handle)
        except Exception as exc:
            log.warning("cleanup of run %s after an error failed: %s", handle, exc)
        raise
    if pump is not None:
        pump.join(timeout=5)
    return result
