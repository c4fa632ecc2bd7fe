"""The core's light signer (coincurve) against eth-account: the same address and the same signature bytes for
any key and digest, and `task status` pays for neither eth-account nor web3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from hashgrid.signing import KeySigner, checksum_address

ROOT = Path(__file__).resolve().parents[2]
ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@settings(max_examples=200, deadline=None)
@given(secret=st.integers(min_value=1, max_value=ORDER - 1), digest=st.binary(min_size=32, max_size=32))
def test_same_address_and_signature_as_eth_account(secret: int, digest: bytes) -> None:
    key = "0x" + secret.to_bytes(32, "big").hex()
    account = Account.from_key(key)
    signer = KeySigner(key)
    assert signer.address == account.address
    assert signer.sign_digest(digest) == bytes(account.unsafe_sign_hash(digest).signature)


def test_checksum_address_is_eip55() -> None:
    # the EIP-55 test vectors
    for address in ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
                    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
                    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"):
        assert checksum_address(address.lower()) == address


def test_task_status_imports_neither_web3_nor_eth_account(tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.json"
    deployment.write_text(json.dumps({"chain_id": 31337, "rpc_url": "http://127.0.0.1:9", "addresses": {},
                                      "abis": {}, "start_block": 0, "deployer": "0x" + "00" * 20}))
    key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # DEV-ONLY: anvil key 1
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hashgrid.cli", "task", "status", "1", "--marketplace",
         "http://127.0.0.1:9", "--rpc", "http://127.0.0.1:9", "--deployment", str(deployment),
         "--key-env", "K"], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "K": key, "HASHGRID_STATE_DIR": str(tmp_path)})
    assert done.returncode == 4, done.stderr[-500:]  # the marketplace does not answer: unavailable
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "hashgrid.client" in imported
    heavy = {name for name in imported if name.split(".")[0] in {"web3", "eth_account", "eth_keys"}}
    assert not heavy, sorted(heavy)[:10]
