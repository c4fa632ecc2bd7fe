"""The mypyc-compiled matching engine: used only when built from exactly the sources in the tree, and it
decides exactly as the Python engine on the benchmark's inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import marketplace.matching
from marketplace.matching import _native

ROOT = Path(__file__).resolve().parents[2]


def stamped(tmp_path: Path, digest: str) -> Path:
    (tmp_path / "stamp.json").write_text(json.dumps({"digest": digest}))
    return tmp_path


def test_a_build_of_these_sources_goes_first(tmp_path: Path) -> None:
    path = ["/src"]
    assert _native.activate(path, stamped(tmp_path, _native.digest()))
    assert path == [str(tmp_path / "marketplace" / "matching"), "/src"]


def test_a_stale_or_missing_build_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ["/src"]
    assert not _native.activate(path, stamped(tmp_path, "0" * 64))  # built from other sources
    assert not _native.activate(path, tmp_path / "absent")
    (tmp_path / "stamp.json").write_text("{not json")
    assert not _native.activate(path, tmp_path)
    monkeypatch.setenv("HASHGRID_MATCHING_NATIVE", "0")
    assert not _native.activate(path, stamped(tmp_path, _native.digest()))
    assert path == ["/src"]


def test_an_edited_source_changes_the_digest(tmp_path: Path) -> None:
    package = tmp_path / "matching"
    package.mkdir()
    for name in _native.COMPILED:
        (package / f"{name}.py").write_bytes((_native.HERE / f"{name}.py").read_bytes())
    assert _native.digest(package) == _native.digest()
    (package / "engine.py").write_text((package / "engine.py").read_text() + "\n# edited\n")
    assert _native.digest(package) != _native.digest()


DECIDE = """
import hashlib, json, sys
from bench.matching import NOW, synthetic_providers, synthetic_tasks
import marketplace.matching as m
r = m.match(synthetic_providers(1_000, seed=1), synthetic_tasks(10_000, seed=2), m.MatchConfig(), NOW)
out = [[a.task_id, a.providers, a.runtime_class] for a in r.assignments]
out += [[u.task_id, u.code, u.reason, u.funnel, sorted(u.details.items())] for u in r.unplaced]
out += [[p.task_id, p.by, p.provider] for p in r.preemptions]
print(m.NATIVE, len(r.assignments), len(r.preemptions), hashlib.sha256(json.dumps(out).encode()).hexdigest())
"""


def decide(native: bool) -> list[str]:
    env = {**os.environ, "HASHGRID_MATCHING_NATIVE": "1" if native else "0"}
    done = subprocess.run([sys.executable, "-c", DECIDE], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout.split()


@pytest.mark.skipif(not marketplace.matching.NATIVE, reason="no compiled engine: make setup")
def test_the_compiled_engine_decides_as_the_python_one() -> None:
    """Every assignment, reason (with its funnel and details) and preemption, on 1,000 providers and 10,000
    tasks of the benchmark's seeded inputs."""
    compiled, python = decide(True), decide(False)
    assert compiled[0] == "True" and python[0] == "False"
    assert int(compiled[1]) > 1_000 and int(compiled[2]) > 0  # placements and preemptions both happen
    assert compiled[1:] == python[1:]
