"""web3's hashing runs on safe-pysha3, not pycryptodome, in every process that imports hashgrid."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.provider.conftest import ROOT


def _backend_after(import_line: str, env: dict[str, str]) -> str:
    script = "\n".join(
        [
            import_line,
            "from eth_hash.auto import keccak",
            "keccak(b'')",
            "print(type(keccak.hasher.__self__).__name__)",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_marketplace_and_the_provider_hash_with_pysha3() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ETH_HASH_BACKEND"}
    assert _backend_after("import marketplace.api.app", env) == "PySha3Backend"
    assert _backend_after("import provider.daemon", env) == "PySha3Backend"
    assert _backend_after("import web3", env) == "CryptodomeBackend"  # what the default would be


def test_an_operator_choice_wins() -> None:
    env = {**os.environ, "ETH_HASH_BACKEND": "pycryptodome"}
    assert _backend_after("import marketplace.api.app", env) == "CryptodomeBackend"
