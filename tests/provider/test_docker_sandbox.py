"""The hardened Docker sandbox against misbehaving tasks: every limit must hold, nothing may be left behind.

test_runsc_sandbox.py runs these same tests under gVisor by overriding the `backend` fixture.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from provider.runtimes import get_runtime
from provider.runtimes.base import KillReason, RunResult, Runtime
from provider.runtimes.errors import ImageNotFound, InvalidImageReference
from tests.provider.conftest import TaskDirs, leftovers


@pytest.fixture
def backend(docker_client: docker.DockerClient) -> Runtime:
    runtime = get_runtime("docker")
    assert runtime.available()
    return runtime


@pytest.fixture(autouse=True)
def _nothing_left_behind(task_dirs: TaskDirs, docker_client: docker.DockerClient) -> Iterator[None]:
    yield
    assert leftovers(docker_client, task_dirs.run_ids) == []


def run_sh(backend: Runtime, task_dirs: TaskDirs, image: str, script: str, **limits: Any) -> RunResult:
    request = task_dirs.request(backend.name, image=image, command=("sh", "-c", script), **limits)
    return backend.wait(backend.start(request))


def output_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_same_request_gives_same_outputs(backend: Runtime, task_dirs: TaskDirs, busybox_image: str) -> None:
    script = "sort /in/data.txt > /out/sorted.txt; mkdir /out/d; sha256sum /in/data.txt > /out/d/h;"
    script += " wc -w /in/data.txt"
    results, outputs = [], []
    for i in range(2):
        out = task_dirs.input_dir.parent / f"out{i}"
        request = task_dirs.request(
            backend.name, image=busybox_image, command=("sh", "-c", script), output_dir=out
        )
        results.append(backend.wait(backend.start(request)))
        outputs.append(output_files(out))
    assert [r.exit_code for r in results] == [0, 0]
    assert results[0].stdout == results[1].stdout == b"11 /in/data.txt\n"
    assert outputs[0] == outputs[1] and set(outputs[0]) == {"sorted.txt", "d/h"}
    assert all(r.kill_reason is None and r.wall_seconds > 0 and r.peak_memory_mb > 0 for r in results)


def test_stdout_stderr_exit_code_and_usage(backend: Runtime, task_dirs: TaskDirs, busybox_image: str) -> None:
    result = run_sh(backend, task_dirs, busybox_image, "echo out; echo err >&2; id -u; exit 3")
    assert (result.exit_code, result.kill_reason) == (3, None)
    assert result.stdout == b"out\n65534\n" and result.stderr == b"err\n"
    assert result.cpu_seconds > 0 and result.peak_memory_mb > 0


def test_no_network(backend: Runtime, task_dirs: TaskDirs, busybox_image: str) -> None:
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    connections: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):  # accept() timing out is how the loop checks `stop`
                connections.append(listener.accept())

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    host_ip = socket.gethostbyname(socket.gethostname())
    # addresses of this machine only (loopback, the docker bridge, the host's own): a broken sandbox must not
    # send anything to the outside world while being tested; the interface check below covers the rest
    targets = ["127.0.0.1", "172.17.0.1", host_ip]
    script = (
        "; ".join(f"if nc -w 2 {t} {port} </dev/null; then echo REACHED {t}; fi" for t in targets)
        + "; cat /proc/net/dev | tail -n +3 | cut -d: -f1"
    )
    try:
        result = run_sh(backend, task_dirs, busybox_image, script, timeout_s=30)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert b"REACHED" not in result.stdout
    assert connections == []
    assert result.stdout.split() == [b"lo"]  # no interface but loopback


def test_busybox_wget_fails_cleanly_without_network(backend: Runtime, task_dirs: TaskDirs,
                                                    busybox_image: str) -> None:
    """The sample image's wget, refused by the missing network, exits 1 and never by a signal. Debian's
    busybox 1.35 wget crashes on `-T N`: run as a command, the image's wrapper passes it as --timeout=N;
    inside `sh` (which runs applets directly) the long form is the one that works (docs/task-spec.md)."""
    direct = task_dirs.request(backend.name, image=busybox_image,
                               command=("wget", "-q", "-T", "2", "-O", "/tmp/x", "http://127.0.0.1:1/"))
    assert (backend.wait(backend.start(direct)).exit_code) == 1
    script = ("for url in http://127.0.0.1:1/ http://example.invalid/ https://127.0.0.1:1/; do"
              " wget -q --timeout=2 -O /tmp/x $url; echo rc=$?; done")
    result = run_sh(backend, task_dirs, busybox_image, script, timeout_s=60)
    assert (result.exit_code, result.kill_reason) == (0, None), result.stderr
    assert result.stdout.split() == [b"rc=1"] * 3, result.stdout


def test_cannot_write_outside_out(backend: Runtime, task_dirs: TaskDirs, busybox_image: str) -> None:
    before = output_files(task_dirs.input_dir)
    script = (
        "for p in /x /etc/x /bin/x /in/x /in/data.txt /usr/x; do"
        " (echo z >> $p) 2>/dev/null && echo WROTE $p; done;"
        "echo ok > /out/ok && echo OUT_OK; echo t > /tmp/t && echo TMP_OK"
    )
    result = run_sh(backend, task_dirs, busybox_image, script)
    assert b"WROTE" not in result.stdout
    assert b"OUT_OK" in result.stdout and b"TMP_OK" in result.stdout
    assert output_files(task_dirs.input_dir) == before
    assert output_files(task_dirs.output_dir) == {"ok": b"ok\n"}


def test_cannot_see_host_files_docker_socket_or_privileges(
    backend: Runtime,
    task_dirs: TaskDirs,
    busybox_image: str,
) -> None:
    script = (
        "find / -path /proc -prune -o -path /sys -prune -o -name hashgrid-host-marker -print;"
        "ls /var/run/docker.sock /run/docker.sock 2>/dev/null && echo SOCKET;"
        "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"
    )
    result = run_sh(backend, task_dirs, busybox_image, script, timeout_s=30)
    assert b"hashgrid-host-marker" not in result.stdout and b"SOCKET" not in result.stdout
    status = dict(line.split(b":") for line in result.stdout.splitlines())
    assert int(status[b"CapEff"].strip(), 16) == 0
    assert int(status[b"CapBnd"].strip(), 16) == 0
    if backend.name == "docker":  # gVisor's /proc/self/status has no NoNewPrivs line
        assert status[b"NoNewPrivs"].strip() == b"1"


def test_fork_bomb_is_contained(
    backend: Runtime, task_dirs: TaskDirs, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    result = run_sh(backend, task_dirs, busybox_image, "f(){ f | f & }; f; sleep 30", pids=20, timeout_s=4)
    assert result.kill_reason is KillReason.PIDS
    assert docker_client.ping()
    run_id = task_dirs.run_ids[-1]
    stray = [
        p for p in Path("/proc").glob("[0-9]*/cgroup") if p.exists() and f"hashgrid-{run_id}" in _read(p)
    ]
    assert stray == []


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_memory_hog_is_killed(backend: Runtime, task_dirs: TaskDirs, busybox_image: str) -> None:
    result = run_sh(
        backend,
        task_dirs,
        busybox_image,
        'awk "BEGIN { s = \\"x\\"; while (1) s = s s }"',
        memory_mb=64,
        timeout_s=30,
    )
    assert (result.exit_code, result.kill_reason) == (137, KillReason.MEMORY)
    assert result.peak_memory_mb <= 64 * 1.05


def test_sleeper_is_killed_at_its_timeout(backend: Runtime, task_dirs: TaskDirs, busybox_image: str) -> None:
    started = time.monotonic()
    result = run_sh(backend, task_dirs, busybox_image, "sleep 60", timeout_s=1.5)
    assert (result.exit_code, result.kill_reason) == (137, KillReason.TIMEOUT)
    assert 1.4 <= result.wall_seconds < 6 and time.monotonic() - started < 10


def test_output_over_the_cap_is_refused(backend: Runtime, task_dirs: TaskDirs, busybox_image: str) -> None:
    result = run_sh(backend, task_dirs, busybox_image, "head -c 3000000 /dev/zero > /out/big", output_mb=1)
    assert result.kill_reason is KillReason.OUTPUT_TOO_LARGE
    assert output_files(task_dirs.output_dir) == {}
    exact = run_sh(backend, task_dirs, busybox_image, "head -c 1048576 /dev/zero > /out/big", output_mb=1)
    assert (exact.exit_code, exact.kill_reason) == (0, None)
    assert len(output_files(task_dirs.output_dir)["big"]) == 1048576


def test_missing_image_is_a_clear_error(backend: Runtime, task_dirs: TaskDirs) -> None:
    digest = "sha256:" + "0" * 64
    with pytest.raises(ImageNotFound, match=digest):
        backend.start(task_dirs.request(backend.name, image=digest, command=("true",)))
    with pytest.raises(InvalidImageReference, match="busybox:latest"):
        backend.start(task_dirs.request(backend.name, image="busybox:latest", command=("true",)))


def test_cancel_stops_the_run(backend: Runtime, task_dirs: TaskDirs, busybox_image: str) -> None:
    handle = backend.start(
        task_dirs.request(backend.name, image=busybox_image, command=("sh", "-c", "echo started; sleep 60"))
    )
    chunks = backend.logs(handle)
    assert b"started" in next(chunks)
    backend.cancel(handle)
    result = backend.wait(handle)
    assert (result.exit_code, result.kill_reason) == (137, KillReason.CANCELLED)
    assert result.wall_seconds < 10
