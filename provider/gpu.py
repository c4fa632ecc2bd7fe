"""GPUs on this device: what NVML (or nvidia-smi) sees, and which of them a sandbox can really attach.

A GPU is advertised only when a backend can hand it to a container: the engine has a way to attach it (the
NVIDIA container toolkit's hook, or a CDI spec) and a probe container given that GPU sees its device node.
A GPU that fails either test is withheld, with the reason, so it is never shown as free and never assigned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The environment that makes CUDA libraries deterministic; every run that gets a GPU starts with it (a spec's
# own env may still override a key: all replicas of a task get the same spec, so they stay alike).
# - CUBLAS_WORKSPACE_CONFIG: cuBLAS picks reproducible reduction splits (required by PyTorch's
#   use_deterministic_algorithms for CUDA >= 10.2);
# - NVIDIA_TF32_OVERRIDE=0: no silent TF32 in cuBLAS/cuDNN float32 maths (TF32 is not the same on every GPU);
# - CUDA_DEVICE_ORDER: device 0 inside the sandbox is the attached GPU whatever the PCI order;
# - TF_DETERMINISTIC_OPS / TF_CUDNN_DETERMINISTIC: TensorFlow's switches; PYTHONHASHSEED: stable hashing.
DETERMINISTIC_GPU_ENV: dict[str, str] = {
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    "NVIDIA_TF32_OVERRIDE": "0",
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    "TF_DETERMINISTIC_OPS": "1",
    "TF_CUDNN_DETERMINISTIC": "1",
    "PYTHONHASHSEED": "0",
}

def visible_devices_env(gpus: Sequence[str]) -> dict[str, str]:
    """The NVIDIA toolkit's own variables, set by the sandbox over the spec's and the image's env: on a host
    whose default runtime is `nvidia`, a container with NVIDIA_VISIBLE_DEVICES=all (a spec's env, or a CUDA
    base image's) would otherwise get every GPU, reserved or not, and never pay for them."""
    return {"NVIDIA_VISIBLE_DEVICES": ",".join(gpus) if gpus else "void",
            "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}


NVIDIA_HOOK = "nvidia-container-runtime-hook"  # dockerd registers its "nvidia" device driver only with it
CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
# A probe container passes when the GPU it was given shows up as a character device inside it.
PROBE_COMMAND = ("sh", "-c", "for d in /dev/nvidia[0-9]*; do [ -c \"$d\" ] && exit 0; done; exit 3")


@dataclass(frozen=True)
class Gpu:
    """One GPU as detected; `uuid` is what a backend attaches (indexes can change between boots)."""

    index: int
    uuid: str
    model: str
    memory_mb: int | None
    driver: str
    cuda_major: int | None
    source: str  # "nvml" | "nvidia-smi"

    def to_dict(self) -> dict[str, Any]:
        return {"vendor": "nvidia", **asdict(self)}


@dataclass(frozen=True)
class GpuScan:
    """What detection found; `note` says why nothing was found when `gpus` is empty."""

    gpus: list[Gpu]
    source: str | None
    note: str = ""


def _nvml() -> Any:
    import pynvml  # nvidia-ml-py; its import needs no driver, nvmlInit does

    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def scan_nvml() -> GpuScan:
    """GPUs through NVML (the library nvidia-smi itself uses); empty with a note when NVML is missing."""
    try:
        nvml = _nvml()
    except ImportError:
        return GpuScan([], None, "nvidia-ml-py is not installed")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return GpuScan([], None, f"NVML: {exc}")
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        try:
            cuda = int(nvml.nvmlSystemGetCudaDriverVersion_v2())
            cuda_major: int | None = cuda // 1000
        except nvml.NVMLError:
            cuda_major = None
        gpus = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(Gpu(index=index, uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                            model=_text(nvml.nvmlDeviceGetName(handle)), memory_mb=int(memory.total) // 2**20,
                            driver=driver, cuda_major=cuda_major, source="nvml"))
        return GpuScan(gpus, "nvml")
    except nvml.NVMLError as exc:
        return GpuScan([], None, f"NVML: {exc}")
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _smi(*args: str) -> str:
    return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout


def parse_smi(query_csv: str, banner: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=index,name,memory.total,driver_version,uuid` and its banner."""
    found = re.search(r"CUDA Version:\s*(\d+)\.", banner)
    cuda_major = int(found.group(1)) if found else None
    gpus = []
    for line in query_csv.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        index, name, memory, driver, uuid = fields[:5]
        gpus.append(Gpu(index=int(index), uuid=uuid, model=name,
                        memory_mb=int(memory) if memory.isdigit() else None, driver=driver,
                        cuda_major=cuda_major, source="nvidia-smi"))
    return gpus


def scan_smi() -> GpuScan:
    """GPUs from nvidia-smi: the fallback where NVML's Python binding cannot load the library."""
    if shutil.which("nvidia-smi") is None:
        return GpuScan([], None, "no nvidia-smi on PATH")
    try:
        query = _smi("--query-gpu=index,name,memory.total,driver_version,uuid",
                     "--format=csv,noheader,nounits")
        banner = _smi()
    except (OSError, subprocess.SubprocessError) as exc:
        return GpuScan([], None, f"nvidia-smi failed: {exc}")
    return GpuScan(parse_smi(query, banner), "nvidia-smi")


def scan() -> GpuScan:
    """NVML first, nvidia-smi as fallback; notes of both when neither finds a GPU."""
    first = scan_nvml()
    if first.gpus:
        return first
    second = scan_smi()
    if second.gpus:
        return second
    return GpuScan([], None, "; ".join(n for n in (first.note, second.note) if n) or "no NVIDIA GPU")


# ------------------------------------------------------------------------------------------------ attach


@dataclass(frozen=True)
class AttachSupport:
    """Whether one backend can hand a GPU to a container: `method` when it can, `reason` when not."""

    backend: str  # "docker" | "runsc"
    method: str | None  # "nvidia" (the toolkit's hook) | "cdi"
    reason: str | None = None


def cdi_devices(dirs: Sequence[Path] = CDI_DIRS) -> bool:
    """Whether a CDI spec for NVIDIA GPUs is installed (`nvidia-ctk cdi generate` writes one)."""
    for directory in dirs:
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.json")):
            try:
                if "nvidia.com/gpu" in path.read_text(errors="replace"):
                    return True
            except OSError:
                continue
    return False


def engine_methods(info: Mapping[str, Any], *, hook: bool, cdi: bool) -> tuple[str | None, str]:
    """How the engine can attach NVIDIA GPUs (`docker info`'s document), or why it cannot."""
    if cdi and info.get("CDISpecDirs"):
        return "cdi", ""
    if hook or "nvidia" in (info.get("Runtimes") or {}):
        return "nvidia", ""
    if cdi:
        return None, (f"a CDI spec is installed but docker {info.get('ServerVersion', '?')} has no CDI "
                      "support (Docker 25+ with the cdi feature)")
    return None, (f"no NVIDIA container toolkit ({NVIDIA_HOOK} not on PATH, no 'nvidia' runtime) and no CDI "
                  "spec: install nvidia-container-toolkit")


def runsc_gpu_reason(info: Mapping[str, Any]) -> str | None:
    """None when runsc can pass GPUs through (gVisor's nvproxy), else why it cannot."""
    runtime = (info.get("Runtimes") or {}).get("runsc")
    if runtime is None:
        return "runsc is not registered with the docker engine"
    args = [str(a) for a in runtime.get("runtimeArgs") or runtime.get("runtime_args") or []]
    if any(a in ("--nvproxy", "--nvproxy=true") for a in args):
        return None
    return ("runsc is registered without --nvproxy (gVisor's GPU proxy): it cannot pass a GPU through; add "
            "\"--nvproxy\" to its runtimeArgs in daemon.json, or run GPU tasks under docker")


def attach_support(info: Mapping[str, Any] | None, engine_error: str = "") -> dict[str, AttachSupport]:
    """Per backend, how it would attach a GPU here. `info` is `docker info` (None: no engine)."""
    if info is None:
        why = f"cannot attach: no docker engine ({engine_error})" if engine_error else \
            "cannot attach: no docker engine"
        return {name: AttachSupport(name, None, why) for name in ("docker", "runsc")}
    method, why = engine_methods(info, hook=shutil.which(NVIDIA_HOOK) is not None, cdi=cdi_devices())
    support = {"docker": AttachSupport("docker", method, None if method else f"cannot attach: {why}")}
    runsc_why = runsc_gpu_reason(info)
    if method is None:
        support["runsc"] = AttachSupport("runsc", None, f"cannot attach: {why}")
    elif runsc_why is not None:
        support["runsc"] = AttachSupport("runsc", None, runsc_why)
    else:
        support["runsc"] = AttachSupport("runsc", method)
    return support


def engine_info() -> tuple[dict[str, Any] | None, str]:
    """`docker info` of the local engine, or (None, why) when there is none to ask."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return None, f"no engine socket at {host.removeprefix('unix://')}"
    try:
        import docker
        import docker.errors
    except ImportError:
        return None, "the docker Python SDK is not installed"
    try:
        client = docker.from_env(timeout=10)
        return dict(client.info()), ""
    except (docker.errors.DockerException, OSError) as exc:
        message = str(exc)
        if "FileNotFoundError" in message or "No such file" in message or "Connection refused" in message:
            return None, "nothing answers on the engine's socket"
        return None, message[:200]


# ------------------------------------------------------------------------------------------------ offer


Prober = Callable[[str, Gpu], str | None]  # (backend, gpu) -> None when a probe container saw it, else why


def offer(gpus: Sequence[Gpu], support: Mapping[str, AttachSupport], runtimes: Sequence[str],
          probe: Prober) -> dict[str, Any]:
    """The GPU part of the device document: offered GPUs, withheld ones with the reason, and the backends
    that attach every offered GPU. A GPU is offered when a working backend attaches it and a probe passes."""
    backends = [name for name in ("docker", "runsc") if name in runtimes and name in support
                and support[name].method]
    offered: list[dict[str, Any]] = []
    withheld: list[dict[str, Any]] = []
    attaching: set[str] = set(backends)
    for gpu in gpus:
        passed, reasons = [], []
        for name in backends:
            failure = probe(name, gpu)
            if failure is None:
                passed.append(name)
            else:
                reasons.append(f"{name} probe: {failure}")
        if passed:
            offered.append({**gpu.to_dict(), "attach": support[passed[0]].method})
            attaching &= set(passed)
            continue
        if not backends:
            if "docker" not in runtimes and "runsc" not in runtimes:
                reasons.append("cannot attach: no docker engine")
            else:
                reasons.extend(s.reason for s in support.values() if s.reason)
        reason = "; ".join(dict.fromkeys(reasons)) or "no backend can attach a GPU"
        withheld.append({**gpu.to_dict(), "reason": reason})
    notes = {name: s.reason for name, s in sorted(support.items()) if s.reason}
    return {"gpus": offered, "gpus_withheld": withheld,
            "gpu_runtimes": sorted(attaching) if offered else [], "gpu_attach_notes": notes}


def describe(gpu: Mapping[str, Any]) -> str:
    """'GPU 0 NVIDIA H200 (143771 MB)' for messages."""
    memory = f" ({gpu.get('memory_mb')} MB)" if gpu.get("memory_mb") else ""
    return f"GPU {gpu.get('index')} {gpu.get('model')}{memory}"


# ------------------------------------------------------------------------------------------------ usage


@dataclass(frozen=True)
class GpuUsage:
    """What NVML saw on a run's GPUs while it ran: mean utilisation (%) and peak memory used (MB, summed)."""

    utilization_pct: float
    memory_peak_mb: float


class GpuSampler:
    """Samples NVML on the run's own GPUs in a thread; `stop()` returns the summary (zeros without NVML).

    The GPUs are reserved for the one run, so device-wide readings are the run's own.
    """

    def __init__(self, uuids: Sequence[str], interval_s: float = 0.5) -> None:
        self.uuids = list(uuids)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._samples: list[float] = []
        self._peak = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> GpuSampler:
        if self.uuids:
            self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            nvml = _nvml()
            nvml.nvmlInit()
        except Exception as exc:  # no NVML here: usage simply has no GPU readings
            log.debug("no NVML for GPU usage: %s", exc)
            return
        try:
            handles = [nvml.nvmlDeviceGetHandleByUUID(u.encode() if isinstance(u, str) else u)
                       for u in self.uuids]
            while True:
                busy, used = 0.0, 0.0
                for handle in handles:
                    busy += float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                    used += float(nvml.nvmlDeviceGetMemoryInfo(handle).used) / 2**20
                self._samples.append(busy / len(handles))
                self._peak = max(self._peak, used)
                if self._stop.wait(self.interval_s):
                    break
        except Exception as exc:
            log.debug("GPU sampling stopped: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()

    def stop(self) -> GpuUsage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        mean = sum(self._samples) / len(self._samples) if self._samples else 0.0
        return GpuUsage(round(mean, 1), round(self._peak, 1))


# ------------------------------------------------------------------------------------------------ pool


class GpuPool:
    """The offered GPUs and which run holds each: a GPU belongs to one run at a time, so two concurrent runs
    never share one, and what is free is what the heartbeat reports."""

    def __init__(self, uuids: Sequence[str]) -> None:
        self._order = list(dict.fromkeys(uuids))
        self._holder: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self._order)

    def free(self) -> list[str]:
        with self._lock:
            return [uuid for uuid in self._order if uuid not in self._holder]

    def reserve(self, run_id: str, count: int) -> tuple[str, ...] | None:
        """`count` free GPUs for `run_id` (the first free ones), or None when fewer are free."""
        with self._lock:
            if any(holder == run_id for holder in self._holder.values()):
                raise ValueError(f"run {run_id} already holds GPUs")
            free = [uuid for uuid in self._order if uuid not in self._holder]
            if count > len(free):
                return None
            taken = tuple(free[:count])
            for uuid in taken:
                self._holder[uuid] = run_id
            return taken

    def release(self, run_id: str) -> None:
        with self._lock:
            for uuid in [u for u, holder in self._holder.items() if holder == run_id]:
                del self._holder[uuid]
