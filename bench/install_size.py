"""`python -m bench.install_size`: how big each install by role is (pyproject.toml's extras).

Creates a fresh virtual environment per role in a temporary folder, installs the project into it (not
editable: what a user's `pip install` gets) and prints its size on disk beside a bare venv's (the baseline of
the same run), with the three largest packages of each. Reads packages from pip's cache when it has them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
ROLES = {"bare venv (baseline)": None, "customer": "", "provider": "provider", "server": "server",
         "dev (make setup)": "dev"}

console = Console()


def size_of(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            file = Path(directory) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def largest(site: Path, count: int = 3) -> str:
    sizes = [(size_of(p), p.name) for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info")
             and p.name not in {"__pycache__", "pip", "setuptools", "_distutils_hack"}]
    return ", ".join(f"{name} {size / 2**20:.0f} MB" for size, name in sorted(sizes, reverse=True)[:count])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roles", nargs="*", default=list(ROLES), help="which rows (default: all)")
    args = parser.parse_args()
    table = Table(title="Install size by role (a fresh venv each, pip install of this checkout)")
    for column in ("role", "pip install", "MB on disk", "× bare", "largest packages"):
        table.add_column(column, justify="right" if column in {"MB on disk", "× bare"} else "left")
    bare = None
    with tempfile.TemporaryDirectory(prefix="hashgrid-install-") as scratch:
        for role in args.roles:
            extra = ROLES[role]
            venv = Path(scratch) / role.split()[0]
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            target = "-" if extra is None else f"{ROOT}[{extra}]" if extra else str(ROOT)
            if extra is not None:
                console.print(f"installing {role}...")
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                                target], check=True, stdout=subprocess.DEVNULL)
            size = size_of(venv)
            bare = bare or size
            site = next((venv / "lib").glob("python3*/site-packages"))
            shown = "-" if extra is None else f"hashgrid[{extra}]" if extra else "hashgrid"
            table.add_row(role, shown, f"{size / 2**20:.0f}", f"{size / bare:.1f}", largest(site))
    console.print(table)
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)  # setuptools' in-tree build of the installs


if __name__ == "__main__":
    main()
