"""What this device offers, as one JSON document: `hashgrid provider info` shows it, the daemon advertises it.

The sha256 of its canonical JSON is the on-chain `capabilitiesHash`. `gpus` lists only the GPUs a sandbox
here can attach; `gpus_withheld` the others, each with the reason (provider.gpu). `detect(volatile=False)`
leaves out the values that change from second to second (available memory, free disk) so the advertised hash
is stable.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import threading
from pathlib import Path
from typing import Any

from hashgrid.canonical import hash_document

log = logging.getLogger(__name__)

DETECT_VERSION = 2  # 2: GPUs offered only when attachable; gpus_withheld, gpu_runtimes
VOLATILE_KEYS = {("mem", "available_mb"), ("storage", "free_mb")}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_info() -> dict[str, Any]:
    """Architecture, physical cores, usable threads and model name (from /proc/cpuinfo on Linux)."""
    model = ""
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not model:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not key and (physical or core):
            cores.add((physical, core))
            physical = core = ""
    if physical or core:
        cores.add((physical, core))
    try:
        threads = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        threads = os.cpu_count() or 1
    return {
        "arch": platform.machine(),
        "cores": min(len(cores), threads) if cores else threads,
        "threads": threads,
        "model": model or platform.processor() or "unknown",
    }


def mem_info() -> dict[str, int]:
    """Total and available memory in MB (MemAvailable from /proc/meminfo)."""
    values: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])  # kB
    total = values.get("MemTotal", 0) // 1024
    available = values.get("MemAvailable", values.get("MemFree", 0)) // 1024
    return {"total_mb": total, "available_mb": available}


def storage_info(workdir: Path) -> dict[str, Any]:
    """Free and total disk of the filesystem holding the work dir (where tasks' scratch dirs go)."""
    probe = Path(workdir)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return {"path": str(workdir), "total_mb": usage.total // 2**20, "free_mb": usage.free // 2**20}


def os_info() -> dict[str, str]:
    """OS name and version (/etc/os-release) and kernel release."""
    release: dict[str, str] = {}
    for line in _read("/etc/os-release").splitlines():
        key, _, value = line.partition("=")
        release[key] = value.strip().strip('"')
    return {
        "name": release.get("NAME", platform.system()),
        "version": release.get("VERSION_ID", ""),
        "kernel": platform.release(),
    }


def gpu_section(runtimes: list[str]) -> dict[str, Any]:
    """GPUs offered (a sandbox here attaches them: see provider.gpu), withheld ones with the reason, and the
    backends that attach them. Probes start containers, so the answer is kept for the process's life."""
    key = tuple(runtimes)
    with _gpu_lock:
        if key not in _gpu_cache:
            _gpu_cache[key] = _gpu_section(runtimes)
        return _gpu_cache[key]


def _gpu_section(runtimes: list[str]) -> dict[str, Any]:
    from provider import gpu

    found = gpu.scan()
    if not found.gpus:
        log.debug("no GPU: %s", found.note)
        return {"gpus": [], "gpus_withheld": [], "gpu_runtimes": [], "gpu_attach_notes": {}}
    info, why = gpu.engine_info()
    support = gpu.attach_support(info, why)

    def probe(backend: str, device: gpu.Gpu) -> str | None:
        from provider.runtimes import get_runtime

        runtime = get_runtime(backend)
        probe_gpu = getattr(runtime, "probe_gpu", None)
        return probe_gpu(device.uuid) if probe_gpu is not None else f"{backend} cannot attach GPUs"

    section = gpu.offer(found.gpus, support, runtimes, probe)
    for withheld in section["gpus_withheld"]:
        log.warning("%s is detected but not offered: %s", gpu.describe(withheld), withheld["reason"])
    return section


_gpu_cache: dict[tuple[str, ...], dict[str, Any]] = {}
_gpu_lock = threading.Lock()


def runtime_names() -> list[str]:
    """Runtimes that actually work here, as the backends report them."""
    try:
        from provider.runtimes import available_runtimes
    except ImportError as exc:  # the backends package is missing: advertise nothing rather than lie
        log.warning("runtime backends unavailable: %s", exc)
        return []
    return sorted(available_runtimes())


def detect(workdir: Path | None = None, *, volatile: bool = True) -> dict[str, Any]:
    """The device document. With `volatile=False`, drop fields that change between calls."""
    from hashgrid.config import get_settings

    workdir = workdir or (get_settings().state_dir / "provider")
    runtimes = runtime_names()
    document: dict[str, Any] = {
        "version": DETECT_VERSION,
        "cpu": cpu_info(),
        "mem": mem_info(),
        "storage": storage_info(workdir),
        "os": os_info(),
        "runtimes": runtimes,
        **gpu_section(runtimes),
    }
    if not volatile:
        for section, key in VOLATILE_KEYS:
            document[section].pop(key, None)
    return document


def capabilities_hash(document: dict[str, Any]) -> bytes:
    """The on-chain capabilitiesHash of a device document (sha256 of its canonical JSON)."""
    return hash_document(document)
