"""GPUs without a GPU: what the real Docker engine records for a GPU run, what is advertised when a GPU cannot
be attached, how GPU runs are refused, reserved, metered and given the deterministic CUDA environment.

These machines have no GPU: where a test needs a detected GPU, the scan's result is a stand-in (FAKE_SCAN, a
fake for the one thing no real part here can show); the engine, the probe containers and refusals are real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pytest

from hashgrid.content import ContentStore
from hashgrid.errors import PolicyRefused
from hashgrid.spec import load_spec, parse_spec
from provider import detect as detect_module
from provider import gpu, gpucheck
from provider.executor import env_for, execute, limits_for
from provider.metering import meter
from provider.policy import Policy, check, choose_runtime
from provider.runtimes.base import RunResult
from provider.runtimes.docker import DockerRuntime, attached_gpus
from provider.runtimes.errors import InvalidRunRequest, SandboxFailed
from scripts.make_examples import render
from tests.provider.conftest import ROOT, TaskDirs, leftovers

U0, U1 = "GPU-00000000-1111-2222-3333-444444444444", "GPU-55555555-6666-7777-8888-999999999999"
H200 = gpu.Gpu(index=0, uuid=U0, model="NVIDIA H200", memory_mb=143771, driver="580.159.04", cuda_major=13,
               source="nvml")
FAKE_SCAN = gpu.GpuScan([H200], "nvml")  # stand-in: no GPU on these machines
IMAGE = "sha256:" + "ab" * 32


def gpu_spec(gpus: int = 1, **changes: Any) -> Any:
    data: dict[str, Any] = {"version": 1, "name": "gpu", "runtime": "docker", "image": IMAGE,
                            "command": ["true"], "resources": {"cpus": 1, "memory_mb": 256, "gpus": gpus}}
    data.update(changes)
    return parse_spec(data)


def device_requests(client: docker.DockerClient, run_id: str) -> list[dict[str, Any]]:
    [container] = client.api.containers(all=True, filters={"label": f"hashgrid.run_id={run_id}"})
    return list(client.api.inspect_container(container["Id"])["HostConfig"]["DeviceRequests"] or [])


# ------------------------------------------------------------------------------------------------ attach


def test_created_container_carries_exactly_the_reserved_gpus(
    docker_client: docker.DockerClient, busybox_image: str, task_dirs: TaskDirs
) -> None:
    runtime = DockerRuntime(gpu_attach="nvidia")
    first = task_dirs.request("docker", image=busybox_image, command=("true",), gpus=(U0,))
    second = task_dirs.request("docker", image=busybox_image, command=("true",), gpus=(U1,))
    handles = [runtime.create(first), runtime.create(second)]
    try:
        [one] = device_requests(docker_client, first.run_id)
        [other] = device_requests(docker_client, second.run_id)
        assert one["Driver"] == "nvidia" and one["DeviceIDs"] == [U0]
        assert one["Capabilities"] == [["gpu", "compute", "utility"]]
        assert other["DeviceIDs"] == [U1]  # each run its own device, none shared
        plain = task_dirs.request("docker", image=busybox_image, command=("true",))
        handles.append(runtime.create(plain))
        assert device_requests(docker_client, plain.run_id) == []  # no GPU asked, none attached
    finally:
        for handle in handles:
            runtime.discard(handle)
    assert leftovers(docker_client, task_dirs.run_ids) == []


def test_cdi_attach_names_the_cdi_device(
    docker_client: docker.DockerClient, busybox_image: str, task_dirs: TaskDirs
) -> None:
    runtime = DockerRuntime(gpu_attach="cdi")
    request = task_dirs.request("docker", image=busybox_image, command=("true",), gpus=(U1,))
    handle = runtime.create(request)
    try:
        [record] = device_requests(docker_client, request.run_id)
        assert record["Driver"] == "cdi" and record["DeviceIDs"] == [f"nvidia.com/gpu={U1}"]
        container = docker_client.api.inspect_container(
            docker_client.api.containers(all=True, filters={"label": f"hashgrid.run_id={request.run_id}"})[0])
        assert attached_gpus(container) == (U1,)
    finally:
        runtime.discard(handle)


def test_engine_without_the_nvidia_driver_fails_the_run_and_leaves_nothing(
    docker_client: docker.DockerClient, busybox_image: str, task_dirs: TaskDirs
) -> None:
    runtime = DockerRuntime(gpu_attach="nvidia")  # told to attach, but this engine has no NVIDIA driver
    request = task_dirs.request("docker", image=busybox_image, command=("true",), gpus=(U0,))
    with pytest.raises(SandboxFailed, match="nvidia"):
        runtime.start(request)
    assert leftovers(docker_client, task_dirs.run_ids) == []


def test_gpu_run_refused_with_the_reason_when_the_engine_cannot_attach(
    docker_client: docker.DockerClient, busybox_image: str, task_dirs: TaskDirs
) -> None:
    request = task_dirs.request("docker", image=busybox_image, command=("true",), gpus=(U0,))
    with pytest.raises(InvalidRunRequest, match="NVIDIA container toolkit"):
        DockerRuntime().start(request)
    # runsc here is registered without gVisor's GPU proxy
    with pytest.raises(InvalidRunRequest, match="--nvproxy"):
        DockerRuntime(runtime="runsc", gpu_attach="nvidia").start(request)
    assert leftovers(docker_client, task_dirs.run_ids) == []


def test_runsc_gpu_support_needs_nvproxy() -> None:
    proxied = {"Runtimes": {"runsc": {"runtimeArgs": ["--network=none", "--nvproxy"]}}}
    assert gpu.runsc_gpu_reason(proxied) is None
    assert "--nvproxy" in (gpu.runsc_gpu_reason({"Runtimes": {"runsc": {"runtimeArgs": ["--network=none"]}}})
                           or "")
    support = gpu.attach_support(None, "nothing answers on the engine's socket")
    assert support["docker"].method is None
    assert support["docker"].reason == ("cannot attach: no docker engine (nothing answers on the engine's "
                                        "socket)")


# ------------------------------------------------------------------------------------------------ advertise


def test_unattachable_gpu_is_never_advertised(
    docker_client: docker.DockerClient, images: dict[str, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gpu, "scan", lambda: FAKE_SCAN)
    monkeypatch.setattr(detect_module, "_gpu_cache", {})
    document = detect_module.detect(tmp_path, volatile=False)  # the real engine: no toolkit, no CDI spec
    assert document["gpus"] == [] and document["gpu_runtimes"] == []
    [withheld] = document["gpus_withheld"]
    assert withheld["uuid"] == U0 and "NVIDIA container toolkit" in withheld["reason"]
    refusal = ""
    try:
        check(gpu_spec(), Policy(allow_any_image=True, max_gpus=1), document)
    except PolicyRefused as exc:
        refusal = exc.reason
    assert "offers 0 GPU(s)" in refusal and "GPU 0 NVIDIA H200" in refusal and "toolkit" in refusal


def test_gpu_whose_probe_container_fails_is_withheld(docker_client: docker.DockerClient,
                                                      busybox_image: str) -> None:
    # the engine is told the toolkit is there, so a real probe container is created with the GPU: this
    # engine cannot start it, and the GPU is withheld with that reason
    runtime = DockerRuntime(gpu_attach="nvidia")
    failure = runtime.probe_gpu(U0)
    assert failure is not None and "probe container could not start" in failure
    section = gpu.offer([H200], {"docker": gpu.AttachSupport("docker", "nvidia")}, ["docker", "wasm"],
                        lambda backend, device: runtime.probe_gpu(device.uuid))
    assert section["gpus"] == [] and "docker probe" in section["gpus_withheld"][0]["reason"]
    passed = gpu.offer([H200], {"docker": gpu.AttachSupport("docker", "nvidia"),
                                "runsc": gpu.AttachSupport("runsc", None, "no nvproxy")},
                       ["docker", "runsc"], lambda backend, device: None)
    assert [g["uuid"] for g in passed["gpus"]] == [U0] and passed["gpu_runtimes"] == ["docker"]
    assert passed["gpus"][0]["cuda_major"] == 13 and passed["gpus"][0]["model"] == "NVIDIA H200"


def test_no_engine_means_cannot_attach() -> None:
    section = gpu.offer([H200], gpu.attach_support(None), ["wasm"], lambda backend, device: None)
    assert section["gpus"] == []
    assert section["gpus_withheld"][0]["reason"] == "cannot attach: no docker engine"


def test_detection_on_this_host_finds_no_gpu_and_says_why() -> None:
    scan = gpu.scan_nvml()
    assert scan.gpus == [] and scan.note.startswith("NVML:")
    assert gpu.scan().gpus == []


def test_nvidia_smi_fallback_parses_the_h200() -> None:
    banner = "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0     |"
    [found] = gpu.parse_smi("0, NVIDIA H200, 143771, 580.159.04, GPU-abc\n", banner)
    assert (found.model, found.memory_mb, found.cuda_major) == ("NVIDIA H200", 143771, 13)
    assert found.uuid == "GPU-abc"


# ------------------------------------------------------------------------------------------------ run


def test_gpu_task_is_refused_before_it_runs_on_a_host_without_one(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    with pytest.raises(PolicyRefused, match="offers 0 GPU"):
        execute(gpu_spec(), store=store, policy=Policy(allow_any_image=True, max_gpus=1),
                workdir=tmp_path / "work")
    assert not list((tmp_path / "work").glob("hg-run-*"))


def test_deterministic_cuda_env_only_for_gpu_runs() -> None:
    env = env_for(gpu_spec(env={"CUBLAS_WORKSPACE_CONFIG": ":16:8", "SEED": "1"}), (U0,))
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":16:8" and env["NVIDIA_TF32_OVERRIDE"] == "0"
    assert env["SEED"] == "1"
    assert env_for(gpu_spec(gpus=0), ()) == {}
    assert limits_for(gpu_spec(), Policy(), (U0,)).gpus == (U0,)
    with pytest.raises(PolicyRefused):
        limits_for(gpu_spec(gpus=2), Policy(), (U0,))


def test_gpu_seconds_billed_only_for_gpus_attached() -> None:
    def result(attached: tuple[str, ...]) -> RunResult:
        return RunResult(exit_code=0, kill_reason=None, wall_seconds=10.0, cpu_seconds=1.0,
                         peak_memory_mb=100.0, stdout=b"", stderr=b"", gpus_attached=attached)

    sampled = gpu.GpuUsage(utilization_pct=87.5, memory_peak_mb=2048.0)
    assert meter(result(()), gpu=sampled).gpu_seconds == 0.0  # reserved but never attached: not billed
    assert meter(result(()), gpu=sampled).gpu_utilization_pct == 0.0
    usage = meter(result((U0, U1)), gpu=sampled)
    assert usage.gpu_seconds == 20.0 and usage.gpu_utilization_pct == 87.5
    assert usage.gpu_memory_peak_mb == 2048.0


def test_gpu_task_runs_only_on_a_backend_that_attaches_gpus() -> None:
    device = {"gpu_runtimes": ["docker"], "gpu_attach_notes": {"runsc": "runsc lacks --nvproxy"}}
    assert choose_runtime(gpu_spec(), Policy(), ["docker", "runsc"], device) == "docker"
    assert choose_runtime(gpu_spec(gpus=0), Policy(), ["docker", "runsc"], device) == "runsc"
    with pytest.raises(PolicyRefused, match="lacks --nvproxy"):
        choose_runtime(gpu_spec(), Policy(docker_runtime="runsc"), ["docker", "runsc"], device)
    with pytest.raises(PolicyRefused):
        choose_runtime(gpu_spec(), Policy(), ["docker", "runsc"], {"gpu_runtimes": []})


def test_pool_never_gives_one_gpu_to_two_runs() -> None:
    pool = gpu.GpuPool([f"GPU-{i}" for i in range(4)])
    taken: dict[str, tuple[str, ...] | None] = {}
    barrier = threading.Barrier(8)

    def grab(run_id: str) -> None:
        barrier.wait()
        taken[run_id] = pool.reserve(run_id, 1)

    threads = [threading.Thread(target=grab, args=(f"run-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = [g for g in taken.values() if g is not None]
    assert len(granted) == 4 and len({g[0] for g in granted}) == 4 and pool.free() == []
    holder = next(run for run, g in taken.items() if g is not None)
    pool.release(holder)
    assert pool.free() == list(taken[holder] or ())
    assert pool.reserve("big", 2) is None


# ------------------------------------------------------------------------------------------------ check-gpu


def test_check_gpu_on_this_host_fails_and_says_why() -> None:
    completed = subprocess.run([sys.executable, "-m", "hashgrid.cli", "provider", "check-gpu"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "COLUMNS": "200"})
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "no GPU (NVML:" in completed.stdout and "no NVIDIA container toolkit" in completed.stdout
    assert "skipped: no GPU can be attached here" in completed.stdout


def test_check_gpu_with_a_gpu_but_no_engine_reports_cannot_attach(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "scan", lambda: FAKE_SCAN)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    report = gpucheck.run_check(runs=2)
    rows = {row.step: row for row in report.rows}
    assert rows["detect"].ok and "NVIDIA H200, 143771 MB" in rows["detect"].detail and "CUDA 13" in rows[
        "detect"].detail
    assert rows["attach (docker)"].ok is False
    assert rows["attach (docker)"].detail == ("cannot attach: no docker engine (no engine socket at "
                                              "/nonexistent/docker.sock)")
    assert rows["sandbox runs"].detail == "skipped: no GPU can be attached here" and not report.passed


def test_gpu_example_is_refused_before_it_runs_on_a_host_without_a_gpu(tmp_path: Path,
                                                                       busybox_image: str) -> None:
    # the example's own template, its image stood in by the busybox image (the PyTorch image is built only on
    # GPU hosts): the refusal comes from the GPU check, before any image or input is touched
    (tmp_path / "gpu").mkdir()
    shutil.copy(ROOT / "examples/gpu/train_step.py", tmp_path / "gpu/train_step.py")
    text = render((ROOT / "examples/templates/gpu.yaml").read_text(),
                  images={"hashgrid/pytorch-gpu:1": busybox_image}, base=tmp_path)
    spec_path = tmp_path / "gpu.yaml"
    spec_path.write_text(text)
    assert load_spec(spec_path).resources.gpus == 1
    completed = subprocess.run([sys.executable, "-m", "hashgrid.cli", "provider", "exec", str(spec_path)],
                               cwd=ROOT, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "COLUMNS": "300",
                                    "HASHGRID_STATE_DIR": str(tmp_path / "state")})
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "offers 0 GPU(s) that a sandbox can attach (no GPU detected)" in " ".join(completed.stderr.split())


def test_a_task_cannot_ask_the_toolkit_for_gpus_through_its_env(
    docker_client: docker.DockerClient, busybox_image: str, task_dirs: TaskDirs
) -> None:
    # with `default-runtime: nvidia` the toolkit reads NVIDIA_VISIBLE_DEVICES from the container's env: a spec
    # (or a CUDA base image) saying "all" would get every GPU, unreserved and unbilled
    runtime = DockerRuntime(gpu_attach="nvidia")
    hostile = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "all"}
    plain = task_dirs.request("docker", image=busybox_image, command=("true",))
    plain = replace(plain, env={**plain.env, **hostile})
    with_gpu = task_dirs.request("docker", image=busybox_image, command=("true",), gpus=(U1,))
    with_gpu = replace(with_gpu, env={**with_gpu.env, **hostile})
    handles = [runtime.create(plain), runtime.create(with_gpu)]
    try:
        def env_of(run_id: str) -> list[str]:
            [found] = docker_client.api.containers(all=True, filters={"label": f"hashgrid.run_id={run_id}"})
            return list(docker_client.api.inspect_container(found["Id"])["Config"]["Env"])

        plain_env, gpu_env = env_of(plain.run_id), env_of(with_gpu.run_id)
        visible = "NVIDIA_VISIBLE_DEVICES="
        assert [e for e in plain_env if e.startswith(visible)] == [visible + "void"]
        assert [e for e in gpu_env if e.startswith(visible)] == [visible + U1]
        assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in plain_env + gpu_env
        assert "NVIDIA_DRIVER_CAPABILITIES=all" not in plain_env + gpu_env
    finally:
        for handle in handles:
            runtime.discard(handle)


def test_provider_info_says_why_a_detected_gpu_is_not_offered(
    docker_client: docker.DockerClient, images: dict[str, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from provider.cli import app

    monkeypatch.setattr(gpu, "scan", lambda: FAKE_SCAN)
    monkeypatch.setattr(detect_module, "_gpu_cache", {})
    monkeypatch.setenv("HASHGRID_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "400")
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "none offered" in text
    assert ("gpu not offered │ GPU 0 NVIDIA H200 (143771 MB): cannot attach: no NVIDIA container toolkit"
            in text)
