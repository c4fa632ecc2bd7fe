"""Docker sandbox backend (runc, or gVisor's runsc): a hardened container per run, limits held by the kernel.

A run costs five Engine API calls (create, start, wait, logs, remove; inspect too when the exit status is
137), about what `docker run --rm` costs, so the backend adds little over the CLI.

Usage and kill reasons come from a cgroup parent of our own, `/hashgrid-<run_id>`: runc deletes the
container's cgroup when it exits, but the parent keeps the hierarchical totals until we remove it afterwards:
- cpu seconds: `cpuacct.usage`; peak memory: `memory.max_usage_in_bytes` (v2: `cpu.stat`, `memory.peak`);
- pids: `pids.peak` reaching the limit means a fork was refused (v1 counts `pids.events` in the container's
  own, already deleted, cgroup), so a run that failed or timed out after that is reported as KillReason.PIDS;
- memory: Docker's `State.OOMKilled`, or (runsc) a SIGKILL we did not send at >= 90% of the memory limit;
- timeout and cancel: a timer / cancel() kills the container and records the reason under the run's lock.

GPUs: a run gets exactly the GPUs in `limits.gpus` as a Docker device request (the NVIDIA toolkit's "nvidia"
driver, or CDI where the engine has it), read back from the engine after create; those are what is billed.
runsc attaches them only when registered with gVisor's `--nvproxy`; otherwise it refuses the run.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
from docker.types import DeviceRequest, LogConfig, Ulimit

from provider import gpu as gpu_support
from provider.runtimes._scratch import OutputArea, check_run_id
from provider.runtimes.base import KillReason, Limits, RunRequest, RunResult
from provider.runtimes.errors import (
    ImageNotFound,
    InvalidImageReference,
    InvalidRunRequest,
    RuntimeUnavailable,
    SandboxFailed,
    UnknownRun,
)

log = logging.getLogger(__name__)

RUN_LABEL = "hashgrid.run_id"
SANDBOX_UID = 65534  # nobody:nogroup
LOG_CAP_MB = 16  # stdout+stderr kept per run (json-file rotation keeps the tail)
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROBE_IMAGE_TAG = "hashgrid/busybox:1"
# Under gVisor the host pids cgroup counts the sandbox's threads: ~55 for the sentry and gofer, then ~9 per
# guest process (systrap stubs), measured here; the host limit is scaled so `limits.pids` counts guest
# processes.
RUNSC_PIDS_BASE = 64
RUNSC_PIDS_PER_PROCESS = 10
RUNSC_MIN_MEMORY_MB = 64  # the sentry itself needs ~15 MiB; below this the sandbox may not even start
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_MIB = 1024 * 1024


@dataclass
class _DockerRun:
    """State of one started run; `lock` orders a kill (timer/cancel) against wait() reading the reason."""

    request: RunRequest
    container_id: str
    area: OutputArea
    cgroup_parent: str
    started: float
    gpus: tuple[str, ...] = ()
    timer: threading.Timer | None = None
    kill_reason: KillReason | None = None
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def container_ids_for_label(client: docker.DockerClient, run_id: str | None = None) -> list[str]:
    """Containers with our run label (all runs, or one), running or not: for leftover checks and cleanup."""
    label = RUN_LABEL if run_id is None else f"{RUN_LABEL}={run_id}"
    return [c["Id"] for c in client.api.containers(all=True, filters={"label": label})]


class DockerRuntime:
    """Runs tasks in hardened containers; `runtime="runsc"` runs the same containers under gVisor."""

    def __init__(
        self, *, runtime: str = "runc", name: str | None = None, probe_image: str | None = None,
        gpu_attach: str | None = None,
    ) -> None:
        """`gpu_attach` ("nvidia" | "cdi") overrides what the engine's info says (tests build containers
        with a device request on hosts that have no GPU)."""
        self.runtime = runtime
        self._gpu_attach = gpu_attach
        self._info: dict[str, object] | None = None
        self.name = name or ("docker" if runtime == "runc" else runtime)
        self._probe_image = probe_image
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._runs: dict[str, _DockerRun] = {}
        self._runs_lock = threading.Lock()
        self._available: bool | None = None

    # -- engine ---------------------------------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        """The Engine client, made on first use so importing or listing backends never needs a daemon."""
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = docker.from_env()
                except docker.errors.DockerException as exc:
                    raise RuntimeUnavailable(
                        f"docker engine not reachable: {exc}", runtime=self.name
                    ) from exc
            return self._client

    def available(self) -> bool:
        """The engine answers; for runsc also that it is registered and a probe container really runs."""
        if self._available is not None:
            return self._available
        try:
            self.client.ping()
            if self.runtime != "runc":
                if self.runtime not in (self.client.info().get("Runtimes") or {}):
                    log.info("runtime %s is not registered with the docker engine", self.runtime)
                    self._available = False
                    return False
                self._available = self._probe()
                return self._available
        except (RuntimeUnavailable, docker.errors.DockerException, OSError) as exc:
            log.info("%s backend unavailable: %s", self.name, exc)
            self._available = False
            return False
        self._available = True
        return True

    def _probe_image_id(self) -> str | None:
        if self._probe_image is not None:
            return self._probe_image
        try:
            return str(self.client.api.inspect_image(PROBE_IMAGE_TAG)["Id"])
        except docker.errors.ImageNotFound:
            log.info("no probe image %s for %s (run scripts/build_images.sh)", PROBE_IMAGE_TAG, self.name)
            return None

    def _probe_run(self, command: tuple[str, ...], gpus: tuple[str, ...] = ()) -> RunResult:
        """Run a command in the sample busybox image under this runtime; raises when it cannot run."""
        image = self._probe_image_id()
        if image is None:
            raise RuntimeUnavailable(f"no probe image {PROBE_IMAGE_TAG}", runtime=self.name)
        with tempfile.TemporaryDirectory(prefix="hashgrid-probe-") as tmp:
            request = RunRequest(
                run_id=f"probe-{self.runtime}-{os.getpid()}-{time.monotonic_ns()}",
                runtime=self.name,
                image=image,
                module_path=None,
                command=command,
                env={},
                input_dir=Path(tmp),
                output_dir=Path(tmp) / "out",
                limits=Limits(gpus=gpus, timeout_s=30.0),
            )
            return self.wait(self.start(request))

    def _probe(self) -> bool:
        """Run `true` in the sample busybox image under this runtime (being registered proves nothing)."""
        try:
            result = self._probe_run(("true",))
        except Exception as exc:  # any failure means "does not work here"
            log.info("%s probe failed: %s", self.name, exc)
            return False
        if result.exit_code != 0:
            log.info("%s probe exited %s: %s", self.name, result.exit_code, result.stderr[-500:])
        return result.exit_code == 0

    def probe_gpu(self, uuid: str) -> str | None:
        """None when a container given this GPU sees its device node; else why not (it is then withheld)."""
        try:
            result = self._probe_run(gpu_support.PROBE_COMMAND, gpus=(uuid,))
        except Exception as exc:
            return f"the probe container could not start: {getattr(exc, 'message', exc)}"[:400]
        if result.exit_code != 0:
            return f"the probe container saw no /dev/nvidia* device (exit {result.exit_code})"
        return None

    def engine_info(self) -> dict[str, object]:
        """`docker info`, asked once per backend instance."""
        if self._info is None:
            self._info = dict(self.client.info())
        return self._info

    def _device_requests(self, request: RunRequest) -> list[DeviceRequest]:
        """The device request for exactly the run's GPUs, or a refusal that says why they cannot attach."""
        gpus = request.limits.gpus
        if not gpus:
            return []
        method = self._gpu_attach
        if method is None:
            support = gpu_support.attach_support(self.engine_info()).get(self.name)
            if support is None or support.method is None:
                reason = support.reason if support is not None else f"{self.name} cannot attach GPUs"
                raise InvalidRunRequest(f"{self.name}: the run needs {len(gpus)} GPU(s): {reason}",
                                        run_id=request.run_id)
            method = support.method
        elif self.runtime == "runsc":
            reason = gpu_support.runsc_gpu_reason(self.engine_info())
            if reason is not None:
                raise InvalidRunRequest(f"runsc: the run needs {len(gpus)} GPU(s): {reason}",
                                        run_id=request.run_id)
        if method == "cdi":
            return [DeviceRequest(driver="cdi", device_ids=[f"nvidia.com/gpu={g}" for g in gpus])]
        return [DeviceRequest(driver="nvidia", device_ids=list(gpus),
                              capabilities=[["gpu", "compute", "utility"]])]

    # -- Runtime protocol ----------------------------------------------------------------------------------

    def start(self, request: RunRequest) -> str:
        """Create and start the container; raises (and leaves nothing behind) when it cannot start."""
        return self._start(request, launch=True)

    def create(self, request: RunRequest) -> str:
        """Create the run's container without starting it, so its config can be read back from the engine
        (`hashgrid provider check-gpu`, tests); `discard()` removes it."""
        return self._start(request, launch=False)

    def discard(self, handle: str) -> None:
        """Remove a created (or finished) run's container, scratch area and cgroup without waiting."""
        run = self._get(handle)
        with self._runs_lock:
            self._runs.pop(handle, None)
        self._cleanup(run.container_id, run.area, run.cgroup_parent)

    def _start(self, request: RunRequest, *, launch: bool) -> str:
        run_id = check_run_id(request.run_id)
        image = self._check_request(request)
        with self._runs_lock:
            if run_id in self._runs:
                raise InvalidRunRequest(f"run {run_id} is already running", run_id=run_id)
        limits = request.limits
        area = OutputArea(run_id, limits.output_mb * _MIB, SANDBOX_UID, SANDBOX_UID)
        cgroup_parent = f"/hashgrid-{run_id}"
        container_id: str | None = None
        api = self.client.api
        try:
            device_requests = self._device_requests(request)
            host_config = api.create_host_config(
                binds={
                    str(request.input_dir.resolve()): {"bind": "/in", "mode": "ro"},
                    str(area.out): {"bind": "/out", "mode": "rw"},
                },
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.memory_mb}m,mode=1777"},
                read_only=True,
                network_mode="bridge" if limits.network else "none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=self._host_pids_limit(limits.pids),
                mem_limit=f"{limits.memory_mb}m",
                memswap_limit=f"{limits.memory_mb}m",
                nano_cpus=int(limits.cpus * 1e9),
                cgroup_parent=cgroup_parent,
                runtime=None if self.runtime == "runc" else self.runtime,  # HostConfig.Runtime (API 1.41)
                ulimits=[Ulimit(name="nofile", soft=1024, hard=1024)],
                device_requests=device_requests or None,
                log_config=LogConfig(
                    type="json-file", config={"max-size": f"{LOG_CAP_MB}m", "max-file": "1"}
                ),
            )
            created = api.create_container(
                image,
                command=list(request.command) or None,
                user=f"{SANDBOX_UID}:{SANDBOX_UID}",
                environment={**request.env, **gpu_support.visible_devices_env(limits.gpus)},
                labels={RUN_LABEL: run_id},
                hostname="sandbox",  # not the container id: outputs must not depend on it
                network_disabled=not limits.network,
                host_config=host_config,
                use_config_proxy=False,
            )
            container_id = created["Id"]
            gpus = attached_gpus(api.inspect_container(container_id)) if device_requests else ()
            if set(gpus) != set(limits.gpus):
                raise InvalidRunRequest(f"the engine attached GPUs {gpus}, not the reserved {limits.gpus}",
                                        run_id=run_id)
            run = _DockerRun(request, container_id, area, cgroup_parent, started=time.monotonic(), gpus=gpus)
            with self._runs_lock:
                self._runs[run_id] = run
            if not launch:
                return run_id
            api.start(container_id)
            run.started = time.monotonic()
            run.timer = threading.Timer(limits.timeout_s, self._expire, (run_id,))
            run.timer.daemon = True
            run.timer.start()
        except BaseException as exc:
            with self._runs_lock:
                self._runs.pop(run_id, None)
            self._cleanup(container_id, area, cgroup_parent)
            if isinstance(exc, docker.errors.ImageNotFound):
                raise ImageNotFound(
                    f"image {image} is not in the local docker engine (there is no registry; "
                    f"build it with scripts/build_images.sh)",
                    image=image,
                ) from exc
            if isinstance(exc, docker.errors.DockerException):
                raise SandboxFailed(f"{self.name}: cannot start run {run_id}: {exc}", run_id=run_id) from exc
            raise
        log.debug("run %s started in container %s (%s)", run_id, container_id[:12], self.runtime)
        return run_id

    def wait(self, handle: str) -> RunResult:
        """Wait for the exit, collect logs and usage, copy /out (or refuse it), then remove everything."""
        run = self._get(handle)
        api = self.client.api
        removed = False
        try:
            status = int(api.wait(run.container_id, timeout=None)["StatusCode"])
            wall = time.monotonic() - run.started
            if run.timer is not None:
                run.timer.cancel()
            with run.lock:
                run.finished = True
                kill_reason = run.kill_reason
            stdout, stderr = self._read_logs(run.container_id)
            cpu_s, peak_mb, pids_peak = _cgroup_usage(run.cgroup_parent)
            limits = run.request.limits
            if kill_reason is None and status == 137:
                # runc: the kernel's OOM kill sets OOMKilled. runsc: gVisor's own OOM killer SIGKILLs the
                # guest process and Docker never knows: a SIGKILL we did not send at the ceiling counts too.
                oom = api.inspect_container(run.container_id)["State"].get("OOMKilled")
                if oom or peak_mb >= 0.9 * limits.memory_mb:
                    kill_reason = KillReason.MEMORY
            failed = status != 0 or kill_reason is KillReason.TIMEOUT
            hit_pids = pids_peak >= self._host_pids_limit(limits.pids)
            if hit_pids and failed and kill_reason in (None, KillReason.TIMEOUT):
                kill_reason = KillReason.PIDS
            api.remove_container(run.container_id, force=True)
            removed = True
            if run.area.over_cap():
                if kill_reason is not KillReason.CANCELLED:
                    kill_reason = KillReason.OUTPUT_TOO_LARGE
            else:
                run.area.export(run.request.output_dir)
            return RunResult(
                exit_code=status,
                kill_reason=kill_reason,
                wall_seconds=wall,
                cpu_seconds=cpu_s,
                peak_memory_mb=peak_mb,
                stdout=stdout,
                stderr=stderr,
                gpus_attached=run.gpus,
            )
        except docker.errors.DockerException as exc:
            raise SandboxFailed(
                f"{self.name}: run {handle} failed in the engine: {exc}", run_id=handle
            ) from exc
        finally:
            if run.timer is not None:
                run.timer.cancel()
            with self._runs_lock:
                self._runs.pop(handle, None)
            self._cleanup(None if removed else run.container_id, run.area, run.cgroup_parent)

    def cancel(self, handle: str) -> None:
        """Kill the container now; wait() then reports KillReason.CANCELLED."""
        self._kill(self._get(handle), KillReason.CANCELLED)

    def logs(self, handle: str) -> Iterator[bytes]:
        """Follow the container's combined stdout/stderr until it exits."""
        run = self._get(handle)
        try:
            yield from self.client.api.logs(run.container_id, stream=True, follow=True)
        except docker.errors.NotFound:
            return  # removed by wait() meanwhile: the stream is simply over

    # -- internals -------------------------------------------------------------------------------------------

    def _check_request(self, request: RunRequest) -> str:
        image = request.image or ""
        if not _IMAGE_ID.match(image):
            raise InvalidImageReference(
                f"image must be a local image id 'sha256:<64 hex>', got {image!r}", image=image
            )
        if request.limits.network and self.runtime == "runsc":
            raise InvalidRunRequest(
                "runsc is registered with --network=none: a task that needs network must run under docker",
                run_id=request.run_id,
            )
        if self.runtime == "runsc" and request.limits.memory_mb < RUNSC_MIN_MEMORY_MB:
            raise InvalidRunRequest(
                f"runsc needs at least {RUNSC_MIN_MEMORY_MB} MiB of memory, the task asks "
                f"{request.limits.memory_mb}",
                run_id=request.run_id,
            )
        if not request.input_dir.is_dir():
            raise InvalidRunRequest(f"input dir {request.input_dir} does not exist", run_id=request.run_id)
        return image

    def _host_pids_limit(self, pids: int) -> int:
        return pids if self.runtime == "runc" else RUNSC_PIDS_BASE + RUNSC_PIDS_PER_PROCESS * pids

    def _get(self, handle: str) -> _DockerRun:
        with self._runs_lock:
            run = self._runs.get(handle)
        if run is None:
            raise UnknownRun(f"{self.name}: no running task {handle}", run_id=handle)
        return run

    def _expire(self, handle: str) -> None:
        with self._runs_lock:
            run = self._runs.get(handle)
        if run is not None:
            self._kill(run, KillReason.TIMEOUT)

    def _kill(self, run: _DockerRun, reason: KillReason) -> None:
        with run.lock:
            if run.finished or run.kill_reason is not None:
                return
            try:
                self.client.api.kill(run.container_id)
            except docker.errors.APIError as exc:  # already exited (409) or removed (404)
                log.debug("kill %s: %s", run.container_id[:12], exc)
                return
            run.kill_reason = reason
        log.info("run %s killed: %s", run.request.run_id, reason)

    def _read_logs(self, container_id: str) -> tuple[bytes, bytes]:
        """stdout and stderr apart in one API call, by reading the engine's multiplexed frames ourselves.

        (docker-py's logs() either mixes the streams or needs one call per stream.)
        """
        api = self.client.api
        res = api._get(api._url("/containers/{0}/logs", container_id), params={"stdout": 1, "stderr": 1})
        api._raise_for_status(res)
        data = res.content
        out, err = bytearray(), bytearray()
        i = 0
        while i + 8 <= len(data):
            size = int.from_bytes(data[i + 4 : i + 8], "big")
            (err if data[i] == 2 else out).extend(data[i + 8 : i + 8 + size])
            i += 8 + size
        return bytes(out), bytes(err)

    def _cleanup(self, container_id: str | None, area: OutputArea, cgroup_parent: str) -> None:
        """Remove the container, the scratch dir and our cgroup parent; each step runs even if one fails."""
        if container_id is not None:
            try:
                self.client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: removal already in progress
                    log.error("cannot remove container %s: %s", container_id[:12], exc)
        area.close()
        _remove_cgroup(cgroup_parent)


def attached_gpus(container: dict[str, object]) -> tuple[str, ...]:
    """The GPU ids a container's device requests name, as the engine recorded them (CDI names unwrapped)."""
    host_config = container.get("HostConfig") or {}
    requests = host_config.get("DeviceRequests") if isinstance(host_config, dict) else None
    found: list[str] = []
    for device_request in requests or []:
        for device in device_request.get("DeviceIDs") or []:
            found.append(str(device).removeprefix("nvidia.com/gpu="))
    return tuple(found)


def _cgroup_dirs(cgroup_parent: str) -> list[Path]:
    name = cgroup_parent.strip("/")
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # cgroup v2: one tree
        return [CGROUP_ROOT / name]
    return [d / name for d in CGROUP_ROOT.iterdir() if (d / name).is_dir()]


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _cgroup_usage(cgroup_parent: str) -> tuple[float, float, int]:
    """(cpu seconds, peak memory MiB, peak pids) of everything that ran under the parent."""
    name = cgroup_parent.strip("/")
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        base = CGROUP_ROOT / name
        cpu_us = 0
        with contextlib.suppress(OSError):
            for line in (base / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec"):
                    cpu_us = int(line.split()[1])
        return cpu_us / 1e6, _read_int(base / "memory.peak") / _MIB, _read_int(base / "pids.peak")
    cpu_ns = _read_int(CGROUP_ROOT / "cpuacct" / name / "cpuacct.usage")
    peak = _read_int(CGROUP_ROOT / "memory" / name / "memory.max_usage_in_bytes")
    pids = _read_int(CGROUP_ROOT / "pids" / name / "pids.peak")
    return cpu_ns / 1e9, peak / _MIB, pids


def _remove_cgroup(cgroup_parent: str) -> None:
    """rmdir the parent in every hierarchy; the container's own cgroup may take a moment to go."""
    for path in _cgroup_dirs(cgroup_parent):
        for attempt in range(50):
            try:
                for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
                    child.rmdir()
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or attempt == 49:
                    log.error("cannot remove cgroup %s: %s", path, exc)
                    break
                time.sleep(0.02)


def leftover_cgroups() -> list[Path]:
    """Our cgroup parents that still exist (tests assert none remain)."""
    found: list[Path] = []
    for d in [CGROUP_ROOT, *(p for p in CGROUP_ROOT.iterdir() if p.is_dir())]:
        found.extend(d.glob("hashgrid-*"))
    return found
