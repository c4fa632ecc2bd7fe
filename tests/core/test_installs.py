"""Installs by role: the customer's commands work without the provider's and the server's packages, and a
command that needs one of those installs says which, in one line, exit 2. The optional packages are hidden
from the child interpreter by an import hook (this machine has them all installed: the dev install)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from hashgrid.cli import EXTRA_OF_MODULE

ROOT = Path(__file__).resolve().parents[2]

HIDE = textwrap.dedent("""
    import importlib.abc, sys
    HIDDEN = set(sys.argv[1].split(","))
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, Hide())
    sys.argv = ["hashgrid", *sys.argv[2:]]
    from hashgrid.cli import main
    main()
""")


def _run_without(extras: set[str], *args: str) -> subprocess.CompletedProcess[str]:
    hidden = ",".join(module for module, extra in EXTRA_OF_MODULE.items() if extra in extras)
    return subprocess.run([sys.executable, "-c", HIDE, hidden, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200",
                                                      "HASHGRID_STATE_DIR": str(ROOT / "build" / "no-state")})


@pytest.mark.parametrize("args", [("task", "--help"), ("task", "submit", "--help"), ("wallet", "--help"),
                                  ("dao", "--help"), ("explorer", "--help"), ("--help",)])
def test_customer_commands_need_no_provider_or_server_install(args: tuple[str, ...]) -> None:
    done = _run_without({"provider", "server"}, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage" in done.stdout


@pytest.mark.parametrize(("args", "extra"), [(("provider", "info"), "provider"),
                                             (("marketplace", "serve", "--port", "1"), "server")])
def test_a_command_of_a_missing_install_names_it(args: tuple[str, ...], extra: str) -> None:
    done = _run_without({"provider", "server"}, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"pip install 'hashgrid[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_hidden_module_belongs_to_the_extra_that_installs_it() -> None:
    """EXTRA_OF_MODULE and pyproject.toml agree: each extra's packages are the ones its modules come from."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {extra: " ".join(extras[extra]).lower() for extra in ("provider", "server")}
    distribution = {"pynvml": "nvidia-ml-py", "solcx": "py-solc-x", "starlette": "fastapi"}
    for module, extra in EXTRA_OF_MODULE.items():
        assert distribution.get(module, module) in names[extra], (module, extra)
