"""What this device offers, as one JSON document: `hashgrid provider info` shows it, the daemon advertises it.

The sha256 of its canonical JSON is the on-chain `capabilitiesHash`. `detect(volatile=False)` leaves out the
values that change from second to second (available memory, free disk) so the advertised hash is stable.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hashgrid.canonical import hash_document

log = logging.getLogger(__name__)

DETECT_VERSION = 1
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


def gpu_info() -> list[dict[str, Any]]:
    """NVIDIA GPUs from nvidia-smi where it is installed; [] otherwise (and on any failure, logged)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        completed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version,uuid",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi is present but failed: %s", exc)
        return []
    gpus = []
    for line in completed.stdout.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 5:
            continue
        index, name, memory, driver, uuid = fields[:5]
        gpus.append({"index": int(index) if index.isdigit() else index, "vendor": "nvidia", "model": name,
                     "memory_mb": int(memory) if memory.isdigit() else None, "driver": driver, "uuid": uuid})
    return gpus


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
    document: dict[str, Any] = {
        "version": DETECT_VERSION,
        "cpu": cpu_info(),
        "mem": mem_info(),
        "storage": storage_info(workdir),
        "os": os_info(),
        "gpus": gpu_info(),
        "runtimes": runtime_names(),
    }
    if not volatile:
        for section, key in VOLATILE_KEYS:
            document[section].pop(key, None)
    return document


def capabilities_hash(document: dict[str, Any]) -> bytes:
    """The on-chain capabilitiesHash of a device document (sha256 of its canonical JSON)."""
    return hash_document(document)
