"""Sandbox backends by name: `docker` (runc), `runsc` (the same containers under gVisor), `wasm` (wasmtime).

Instances are shared per process: each keeps an Engine client or compiled-module cache worth reusing, and each
handles several runs at once.
"""

from __future__ import annotations

import threading

from provider.runtimes.base import KillReason, Limits, RunRequest, RunResult, Runtime
from provider.runtimes.errors import UnknownRuntime

RUNTIME_NAMES = ("docker", "runsc", "wasm")

_instances: dict[str, Runtime] = {}
_lock = threading.Lock()


def _make(name: str) -> Runtime:
    if name == "docker":
        from provider.runtimes.docker import DockerRuntime

        return DockerRuntime()
    if name == "runsc":
        from provider.runtimes.docker import DockerRuntime

        return DockerRuntime(runtime="runsc")
    if name == "wasm":
        from provider.runtimes.wasm import WasmRuntime

        return WasmRuntime()
    raise UnknownRuntime(f"unknown runtime {name!r}; known: {', '.join(RUNTIME_NAMES)}", runtime=name)


def get_runtime(name: str) -> Runtime:
    """The backend called `name` (whether it works here is `available()`'s answer)."""
    with _lock:
        if name not in _instances:
            _instances[name] = _make(name)
        return _instances[name]


def available_runtimes() -> list[str]:
    """Names of the backends that really work on this device, in RUNTIME_NAMES order."""
    return [name for name in RUNTIME_NAMES if get_runtime(name).available()]


__all__ = [
    "KillReason",
    "Limits",
    "RunRequest",
    "RunResult",
    "Runtime",
    "RUNTIME_NAMES",
    "available_runtimes",
    "get_runtime",
]
