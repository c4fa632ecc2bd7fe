"""Runtime class keys: what a provider registers and what its daemon checks must be the same string."""

from __future__ import annotations

from hashgrid.runtime_class import (
    backend_of,
    class_of_task,
    classes_for,
    cuda_major,
    is_gpu_class,
    runtime_of,
)

H200 = {"model": "NVIDIA H200", "cuda_major": 13, "memory_mb": 143771}


def test_classes_follow_the_backend_the_daemon_uses() -> None:
    assert classes_for({"docker": "runsc", "wasm": "wasm"}) == ["runsc", "wasm"]
    assert classes_for({"docker": "docker"}) == ["runc"]
    assert classes_for({"docker": "wasm", "wasm": "runsc"}) == []  # a backend that cannot run the runtime


def test_a_gpu_class_names_model_and_cuda_major_and_matches_the_daemons_check() -> None:
    registered = classes_for({"docker": "runsc", "gpu": "docker", "wasm": "wasm"}, [H200])
    assert registered == ["runc/NVIDIA H200/cuda13", "runsc", "wasm"]  # GPU tasks go where GPUs attach
    assert class_of_task("runc", gpu_task=True, gpus=[H200]) in registered
    assert class_of_task("runsc", gpu_task=False, gpus=[H200]) == "runsc"
    odd = {"model": "A/B 80GB", "cuda": "12.4"}
    (gpu_class,) = [c for c in classes_for({"docker": "docker"}, [odd]) if is_gpu_class(c)]
    assert gpu_class == class_of_task("runc", gpu_task=True, gpus=[odd]) == "runc/A-B 80GB/cuda12"
    assert (backend_of(gpu_class), runtime_of(gpu_class)) == ("runc", "docker")


def test_cuda_major_from_what_detection_reports() -> None:
    assert [cuda_major(g) for g in ({"cuda_major": 12}, {"cuda_version": "11.8"}, {"cuda": 13},
                                    {"cuda_major": True}, {})] == [12, 11, 13, None, None]
    assert classes_for({"docker": "docker"}, [{"model": "T4"}]) == ["runc", "runc/T4/cuda?"]
