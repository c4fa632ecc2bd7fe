"""Runtime classes: where honest replicas of one task hash the same, so the matcher keeps a task inside one.

A class names the sandbox backend that runs a spec's runtime (`runc`, `runsc`, `wasm`) and, for GPU tasks, the
GPU model and CUDA major version: `runsc`, `runc/NVIDIA H200/cuda12`. The provider daemon computes its classes
from what it will really use (`docker_runtime = "auto"` resolves to runsc or runc on that host) and the same
function tells it, at run time, whether an assignment's recorded class is its own (docs/matching.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# a provider's backend name (provider/runtimes) -> the class's backend name
BACKEND_CLASS = {"docker": "runc", "runsc": "runsc", "wasm": "wasm"}
# a class's backend -> the spec runtime it runs
RUNTIME_OF_BACKEND = {"runc": "docker", "runsc": "docker", "wasm": "wasm"}
UNKNOWN_CUDA = "cuda?"


def runtime_class(backend: str, gpu_model: str | None = None, cuda_major: int | None = None) -> str:
    """The class key of a backend (a provider's or a class's name), with a GPU part for GPU work."""
    name = BACKEND_CLASS.get(backend, backend)
    if gpu_model is None:
        return name
    cuda = UNKNOWN_CUDA if cuda_major is None else f"cuda{cuda_major}"
    return f"{name}/{gpu_model.strip()}/{cuda}"


def backend_of(cls: str) -> str:
    """The class's backend: `runc/NVIDIA H200/cuda12` -> `runc`."""
    return cls.split("/", 1)[0]


def runtime_of(cls: str) -> str:
    """The spec runtime (`docker`, `wasm`) a class runs; a class named after a runtime stands for itself."""
    backend = backend_of(cls)
    return RUNTIME_OF_BACKEND.get(backend, backend)


def is_gpu_class(cls: str) -> bool:
    """Whether the class is for GPU work (it names a GPU model and CUDA major)."""
    return "/" in cls


def provider_backend(cls: str) -> str:
    """The provider backend name (provider/runtimes) that runs `cls`: `runc` -> `docker`."""
    backend = backend_of(cls)
    return {v: k for k, v in BACKEND_CLASS.items()}.get(backend, backend)


def cuda_major(gpu: Mapping[str, Any]) -> int | None:
    """The CUDA major version a detected GPU entry reports (`cuda_major`, or `cuda`/`cuda_version` "12.4")."""
    value = gpu.get("cuda_major")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    for key in ("cuda_major", "cuda", "cuda_version"):
        text = gpu.get(key)
        if isinstance(text, str | int | float) and not isinstance(text, bool):
            head = str(text).strip().split(".", 1)[0]
            if head.isdigit():
                return int(head)
    return None


def classes_for(backends: Mapping[str, str], gpus: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """A provider's classes from the backend it uses per spec runtime ({"docker": "runsc", "wasm": "wasm",
    "gpu": "docker"}: "gpu" is the backend of docker tasks with GPUs, default the docker one) and its offered
    GPUs: one CPU class per runtime, and a GPU class when it offers a GPU (the first GPU's model and CUDA
    major, as the marketplace records the provider's GPU model)."""
    out = set()
    for runtime, backend in backends.items():
        if runtime == "gpu" or runtime_of(runtime_class(backend)) != runtime:
            continue  # a backend that cannot run this runtime: nothing honest to advertise
        out.add(runtime_class(backend))
    first = next((g for g in gpus if isinstance(g, Mapping)), None)
    docker = backends.get("gpu", backends.get("docker"))
    if first is not None and docker is not None and runtime_of(runtime_class(docker)) == "docker":
        model = str(first.get("model") or "unknown")[:96].replace("/", "-")
        out.add(runtime_class(docker, model, cuda_major(first)))
    return sorted(out)


def class_of_task(cls_backend: str, *, gpu_task: bool, gpus: Iterable[Mapping[str, Any]] = ()) -> str:
    """The class a provider runs one task in: its backend for the task's runtime, plus the GPU part for a GPU
    task (the daemon compares it with the class recorded with the assignment)."""
    if not gpu_task:
        return runtime_class(cls_backend)
    first = next((g for g in gpus if isinstance(g, Mapping)), None)
    if first is None:
        return runtime_class(cls_backend)
    model = str(first.get("model") or "unknown")[:96].replace("/", "-")
    return runtime_class(cls_backend, model, cuda_major(first))
