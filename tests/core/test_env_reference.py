"""docs/configuration.md is the one reference of the HASHGRID_* variables: it must match what
`python -m scripts.env_reference` generates from the settings classes, and every HASHGRID_* name the code
reads must be in it (a variable added without regenerating, or read outside the settings unlisted, fails)."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.env_reference import DOC, render

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("hashgrid", "marketplace", "provider", "billing", "verifier", "scripts")


def test_the_reference_is_current() -> None:
    assert DOC.read_text() == render(), "stale: run `python -m scripts.env_reference`"


def test_every_variable_the_code_reads_is_documented() -> None:
    documented = set(re.findall(r"`(HASHGRID_[A-Z0-9_]+)`", DOC.read_text()))
    read: set[str] = set()
    for part in PARTS:
        for path in (ROOT / part).rglob("*"):
            if path.suffix in (".py", ".sh") and "migrations" not in path.parts:
                read |= set(re.findall(r"HASHGRID_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="replace")))
    read -= {"HASHGRID_"}
    assert read - documented == set(), f"read but not in docs/configuration.md: {sorted(read - documented)}"
