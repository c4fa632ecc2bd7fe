"""Fixtures for the sandbox tests: the real Docker engine (started by scripts/docker_engine.sh when down), the
sample images and wasm modules (built when missing), per-test task dirs and a check that nothing is left.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from provider.runtimes._scratch import SCRATCH_PREFIX, scratch_root
from provider.runtimes.base import Limits, RunRequest

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX_TAG = "hashgrid/busybox:1"
_counter = itertools.count()


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    """A client of a running engine (with runsc registered), started the project's way if needed."""
    try:
        client = docker.from_env()
        client.ping()
        if "runsc" in (client.info().get("Runtimes") or {}):
            return client
    except docker.errors.DockerException:
        pass
    subprocess.run(["bash", str(ROOT / "scripts/docker_engine.sh")], check=True, cwd=ROOT)
    client = docker.from_env()
    client.ping()
    return client


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, str]:
    """build/images.json (tag -> image id); the busybox image is built when missing (under a second)."""
    path = ROOT / "build/images.json"
    tags = json.loads(path.read_text()) if path.exists() else {}
    try:
        present = tags.get(BUSYBOX_TAG) and docker_client.api.inspect_image(tags[BUSYBOX_TAG])
    except docker.errors.ImageNotFound:
        present = None
    if not present:
        subprocess.run(
            ["bash", str(ROOT / "scripts/build_images.sh"), "--only", "busybox"], check=True, cwd=ROOT
        )
        tags = json.loads(path.read_text())
    return tags


@pytest.fixture(scope="session")
def busybox_image(images: dict[str, str]) -> str:
    return images[BUSYBOX_TAG]


@pytest.fixture(scope="session")
def wasm_modules() -> dict[str, Path]:
    """The sample module and the misbehaving probe module, (re)built with zig when missing or changed."""
    subprocess.run(["bash", str(ROOT / "scripts/build_wasm.sh")], check=True, cwd=ROOT, capture_output=True)
    return {"wordfreq": ROOT / "examples/wasm/wordfreq.wasm", "probe": ROOT / "build/wasm/probe.wasm"}


@dataclass
class TaskDirs:
    """A task's input dir (with data.txt), its output dir, and a host dir the task must not see."""

    input_dir: Path
    output_dir: Path
    host_secret: Path
    run_ids: list[str] = field(default_factory=list)

    def request(
        self,
        runtime: str,
        *,
        image: str | None = None,
        module: Path | None = None,
        command: tuple[str, ...] = (),
        output_dir: Path | None = None,
        **limits: Any,
    ) -> RunRequest:
        run_id = f"test-{os.getpid()}-{next(_counter)}"
        self.run_ids.append(run_id)
        return RunRequest(
            run_id=run_id,
            runtime=runtime,
            image=image,
            module_path=module,
            command=command,
            env={"LANG": "C"},
            input_dir=self.input_dir,
            output_dir=output_dir or self.output_dir,
            limits=Limits(**limits),
        )


@pytest.fixture
def task_dirs(tmp_path: Path) -> Iterator[TaskDirs]:
    (tmp_path / "in").mkdir()
    (tmp_path / "in/data.txt").write_text("the quick brown fox\njumps over the lazy dog\nthe end\n")
    secret = tmp_path / "host-only"
    secret.mkdir()
    (secret / "hashgrid-host-marker").write_text("secret")
    yield TaskDirs(tmp_path / "in", tmp_path / "out", secret)


def leftovers(client: docker.DockerClient | None, run_ids: list[str]) -> list[str]:
    """Containers, scratch dirs and cgroups of these runs that still exist (other runs are ignored)."""
    found: list[str] = []
    for run_id in run_ids:
        if client is not None:
            found += [
                f"container {c['Id'][:12]}"
                for c in client.api.containers(all=True, filters={"label": f"hashgrid.run_id={run_id}"})
            ]
        found += [str(p) for p in scratch_root().glob(f"{SCRATCH_PREFIX}{run_id}-*")]
        found += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/hashgrid-{run_id}")]
    return found
