"""`make setup` and `make test` leave the git work tree as they found it: `make test` snapshots
`git status` before and compares after (scripts/check_tree.sh), and a rerun of setup, the step every target
runs first, changes nothing tracked or unignored (it used to rewrite package-lock.json, and the examples)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


SNAPSHOT = ""


def _tree(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "scripts/check_tree.sh", action, SNAPSHOT], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(autouse=True)
def _own_snapshot(tmp_path: Path) -> None:
    """A snapshot file of the test's own: `make test`'s (build/tree-before.txt) stays as make took it."""
    global SNAPSHOT
    SNAPSHOT = str(tmp_path / "tree-before.txt")


def test_setup_leaves_the_tree_as_it_found_it() -> None:
    assert _tree("snapshot").returncode == 0
    env = {**os.environ, "HASHGRID_SKIP_APT": "1"}
    setup = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=900)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    compared = _tree("compare")
    assert compared.returncode == 0, compared.stdout + compared.stderr


def test_the_check_catches_a_stray_file() -> None:
    assert _tree("snapshot").returncode == 0
    stray = ROOT / "stray-file-written-by-a-step.txt"
    stray.write_text("x")
    try:
        compared = _tree("compare")
    finally:
        stray.unlink()
    assert compared.returncode == 1 and "stray-file-written-by-a-step.txt" in compared.stdout
    assert _tree("compare").returncode == 0
