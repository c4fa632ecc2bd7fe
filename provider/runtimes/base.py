"""The one interface every sandbox backend implements, so the daemon never cares which one runs a task."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol


class KillReason(StrEnum):
    """Why a run was stopped by its sandbox rather than ending by itself."""

    TIMEOUT = "timeout"
    MEMORY = "memory"
    PIDS = "pids"
    OUTPUT_TOO_LARGE = "output_too_large"
    FUEL = "fuel"  # wasm: out of fuel (a CPU-work budget)
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run; every field is enforced by the backend, not just advisory."""

    cpus: float = 1.0
    memory_mb: int = 256
    pids: int = 64
    timeout_s: float = 60.0
    output_mb: int = 64
    network: bool = False  # only ever true when the spec asks AND the provider policy allows
    gpus: tuple[str, ...] = ()  # GPU UUIDs reserved for this run alone; the backend attaches exactly these


@dataclass(frozen=True)
class RunRequest:
    """Everything a backend needs to run one task, already verified (digests checked, policy passed)."""

    run_id: str  # unique per run; names the container / scratch dirs so leftovers can be found and removed
    runtime: str  # "docker" | "runsc" | "wasm"
    image: str | None  # docker/runsc: local image id "sha256:<hex>"
    module_path: Path | None  # wasm: verified module file
    command: tuple[str, ...]
    env: dict[str, str]
    input_dir: Path  # mounted read-only at /in
    output_dir: Path  # mounted writable at /out, size-capped by limits.output_mb
    limits: Limits = field(default_factory=Limits)


@dataclass
class RunResult:
    """What a backend reports after a run: the usage is what billing meters."""

    exit_code: int
    kill_reason: KillReason | None
    wall_seconds: float
    cpu_seconds: float
    peak_memory_mb: float
    stdout: bytes
    stderr: bytes
    gpus_attached: tuple[str, ...] = ()  # GPUs the sandbox really had (read back from the engine): billed


class Runtime(Protocol):
    """A sandbox backend. One instance may run several tasks at once (each call is independent)."""

    name: str

    def available(self) -> bool:
        """True when this backend really works on this device (engine reachable, runsc registered...)."""
        ...

    def start(self, request: RunRequest) -> str:
        """Start the run in the background and return a handle (the run_id)."""
        ...

    def wait(self, handle: str) -> RunResult:
        """Block until the run ends (or is killed by its limits), clean up, and report it."""
        ...

    def cancel(self, handle: str) -> None:
        """Stop a run early; a later wait() reports KillReason.CANCELLED."""
        ...

    def logs(self, handle: str) -> Iterator[bytes]:
        """Stream the run's combined stdout/stderr as it is produced."""
        ...
