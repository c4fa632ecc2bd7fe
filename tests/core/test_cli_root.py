"""The root `hashgrid` command as a newcomer meets it: --version, and help that shows no type placeholders."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

HASHGRID = [sys.executable, "-m", "hashgrid.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HASHGRID, *args], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_version_prints_the_installed_version() -> None:
    done = _run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"hashgrid {version('hashgrid')}"


@pytest.mark.parametrize("command", [("--help",), ("task", "submit", "--help"),
                                     ("provider", "run", "--help")])
def test_help_shows_flags_without_a_bool_placeholder(command: tuple[str, ...]) -> None:
    done = _run(*command)
    assert done.returncode == 0, done.stderr
    assert "--help" in done.stdout
    assert "<bool>" not in done.stdout


@pytest.mark.parametrize("args", [("--help",), ("--version",), ()])
def test_root_help_and_version_import_no_part(args: tuple[str, ...]) -> None:
    """Listing the parts needs only their one-line help: no web3, no marketplace, no provider imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "hashgrid.cli", *args],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "typer" in imported  # the measurement saw the imports
    parts = {"web3", "eth_account", "marketplace", "provider", "scripts", "docker", "wasmtime", "sqlalchemy"}
    heavy = {name for name in imported if name.split(".")[0] in parts}
    assert not heavy, sorted(heavy)[:10]
