"""Settings for every Hashgrid process, read once from the environment (HASHGRID_*) and failing fast.

Anvil's well-known dev keys are accepted only on the dev chain (chain id 31337).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_CHAIN_ID = 31337

# DEV-ONLY: anvil's publicly known test accounts (mnemonic "test test ... junk"). Never use them elsewhere.
ANVIL_DEV_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)

# DEV-ONLY: the canary key `make up` gives the local network's marketplace (its canary wallets are derived
# from it and funded by the launcher). Public like the anvil keys, so refused on any other chain.
DEV_CANARY_KEY = "0x" + "c4" * 31 + "01"
DEV_ONLY_KEYS = frozenset((*ANVIL_DEV_KEYS, DEV_CANARY_KEY))


class Settings(BaseSettings):
    """Every knob a Hashgrid process reads. Parameters the DAO owns live on chain, not here."""

    model_config = SettingsConfigDict(env_prefix="HASHGRID_", env_file=None, extra="ignore")

    state_dir: Path = Path.home() / ".hashgrid"  # wallets, provider config and keys, `make up`'s network
    rpc_url: str = "http://127.0.0.1:8545"  # the chain's JSON-RPC endpoint
    chain_id: int = DEV_CHAIN_ID  # dev keys are refused off 31337
    deployment_file: Path | None = None  # default: <state_dir>/deployment.json
    private_key: str | None = None  # the signing key of this process (provider, customer, operator)
    database_url: str | None = None  # default: sqlite in state_dir
    redis_url: str | None = None  # none: background jobs run in-process
    marketplace_url: str = "http://127.0.0.1:8000"  # the marketplace API the CLI and daemons talk to
    tx_timeout_seconds: float = 60.0  # how long a transaction may take to be mined

    @model_validator(mode="after")
    def _dev_keys_only_on_dev_chain(self) -> Settings:
        dev_key = bool(self.private_key) and str(self.private_key).lower() in DEV_ONLY_KEYS
        if dev_key and self.chain_id != DEV_CHAIN_ID:
            raise ValueError(f"an anvil dev key is configured for chain {self.chain_id}; dev keys are for "
                             f"chain {DEV_CHAIN_ID} only")
        return self

    @property
    def deployment_path(self) -> Path:
        return self.deployment_file or (self.state_dir / "deployment.json")

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'marketplace.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own `Settings(...)` instead)."""
    return Settings()
