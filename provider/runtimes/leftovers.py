"""What a killed daemon leaves behind: its containers (still running their task), their cgroup parents, and
its scratch dirs with their tmpfs mounts. A restarted daemon sweeps the runs of its own run-id prefix (every
run id it makes starts with it, provider/daemon.py), never another provider's on the same host or engine;
at start-up no run of its own can be live, so everything with its prefix is a leftover.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from provider.runtimes._scratch import SCRATCH_PREFIX, _unmount, scratch_root

log = logging.getLogger(__name__)


def sweep(prefix: str) -> list[str]:
    """Remove every container, cgroup parent, tmpfs mount and scratch dir of runs whose id starts with
    `prefix`; returns what was removed, in words (for the log)."""
    if not prefix or len(prefix) < 8:  # never a sweep so broad it could reach another provider's runs
        raise ValueError(f"run-id prefix {prefix!r} is too short to sweep by")
    return _containers(prefix) + _scratch_dirs(prefix)


def _containers(prefix: str) -> list[str]:
    try:
        import docker

        from provider.runtimes.docker import RUN_LABEL, _remove_cgroup

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no engine here (a wasm-only host): nothing of ours can be in one
        log.debug("no docker engine to sweep: %s", exc)
        return []
    removed = []
    try:
        for container in client.api.containers(all=True, filters={"label": RUN_LABEL}):
            run_id = str((container.get("Labels") or {}).get(RUN_LABEL, ""))
            if not run_id.startswith(prefix):
                continue
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(container["Id"], force=True)
            _remove_cgroup(f"/hashgrid-{run_id}")
            removed.append(f"container {run_id} ({container.get('State', '?')})")
    finally:
        client.close()
    return removed


def _scratch_dirs(prefix: str) -> list[str]:
    removed = []
    for directory in sorted(scratch_root().glob(f"{SCRATCH_PREFIX}{prefix}*")):
        for mount in _mounts_under(directory):
            _unmount(mount)
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(f"scratch dir {directory}" + ("" if not directory.exists() else " (could not remove)"))
    return removed


def _mounts_under(directory: Path) -> list[Path]:
    """Mount points inside `directory`, deepest first (from /proc/self/mounts; spaces come escaped)."""
    inside = []
    root = str(directory.resolve())
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        point = fields[1].replace("\\040", " ")
        if point == root or point.startswith(root + "/"):
            inside.append(Path(point))
    return sorted(inside, key=lambda p: len(p.parts), reverse=True)
