"""A wallet's signing key (a provider's or a customer's): an eth-account encrypted keystore (scrypt), or a raw
key from the environment. In the core, as both the provider daemon and the customer CLI read keys with it;
eth-account is imported only by the functions that need it (a raw key never pays for it).

A key in HASHGRID_PROVIDER_KEY is for automation (CI, the local network); people use a keystore whose password
comes from a prompt or HASHGRID_KEYSTORE_PASSWORD. Anvil's public dev keys are refused off the dev chain.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hashgrid.config import ANVIL_DEV_KEYS, DEV_CHAIN_ID
from hashgrid.errors import ConfigError
from hashgrid.signing import KeySigner

KEY_ENV = "HASHGRID_PROVIDER_KEY"
PASSWORD_ENV = "HASHGRID_KEYSTORE_PASSWORD"


def _normalise(private_key: str) -> str:
    key = private_key.strip()
    if not key.startswith("0x"):
        key = "0x" + key
    if len(key) != 66:
        raise ConfigError("a private key is 32 bytes: 0x followed by 64 hex characters")
    try:
        KeySigner(key)
    except ValueError as exc:  # not hex, or 0 / past the curve order
        raise ConfigError(f"not a valid private key: {exc}") from None
    return key.lower()


def _write(path: Path, private_key: str, password: str) -> str:
    from eth_account import Account

    if not password:
        raise ConfigError("a keystore needs a non-empty password")
    if path.exists():
        raise ConfigError(f"{path} already exists; refusing to overwrite a keystore")
    encrypted = Account.encrypt(bytes.fromhex(private_key.removeprefix("0x")), password)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(encrypted, handle)
    return Account.from_key(private_key).address


def create_keystore(path: Path, password: str) -> str:
    """Make a new key, write it encrypted to `path` (mode 0600), return its address."""
    from eth_account import Account

    account = Account.create()
    return _write(Path(path), account.key.hex(), password)


def import_keystore(path: Path, private_key: str, password: str) -> str:
    """Encrypt an existing key into a keystore at `path`, return its address."""
    return _write(Path(path), _normalise(private_key), password)


def keystore_address(path: Path) -> str:
    """The address a keystore holds (stored in clear in the file), without decrypting it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read keystore {path}: {exc}") from None
    address = str(data.get("address", ""))
    if not address:
        raise ConfigError(f"keystore {path} does not record its address")
    return "0x" + address.removeprefix("0x")


def load_keystore(path: Path, password: str) -> str:
    """Decrypt a keystore and return its private key (0x hex)."""
    from eth_account import Account

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read keystore {path}: {exc}") from None
    try:
        key = Account.decrypt(data, password)
    except ValueError:
        raise ConfigError(f"wrong password for keystore {path}") from None
    return "0x" + bytes(key).hex()


def resolve_private_key(keystore: Path | None, *, password: str | None = None,
                        chain_id: int = DEV_CHAIN_ID) -> str:
    """The provider's key: HASHGRID_PROVIDER_KEY if set, else the keystore (password given or from env)."""
    raw = os.environ.get(KEY_ENV)
    if raw:
        key = _normalise(raw)
    else:
        if keystore is None:
            raise ConfigError(f"no key: set {KEY_ENV} or configure a keystore (hashgrid provider init)")
        password = password if password is not None else os.environ.get(PASSWORD_ENV)
        if password is None:
            raise ConfigError(f"keystore {keystore} needs a password: set {PASSWORD_ENV} or enter it when "
                              "asked")
        key = load_keystore(keystore, password)
    if key in ANVIL_DEV_KEYS and chain_id != DEV_CHAIN_ID:
        raise ConfigError(f"an anvil dev key is configured for chain {chain_id}; dev keys are for chain "
                          f"{DEV_CHAIN_ID} only")
    return key
