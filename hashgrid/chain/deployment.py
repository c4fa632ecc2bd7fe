"""The deployment file every service reads: chain id, RPC URL, contract addresses and ABIs, start block.

Written once by `hashgrid deploy`; the explorer and indexer scan events from `start_block`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from hashgrid.errors import NotFound

CONTRACT_NAMES = ("GridToken", "ProviderRegistry", "TaskEscrow", "TimelockController", "GridGovernor")


class Deployment(BaseModel):
    """Where the contracts live on one chain, and how to talk to them."""

    chain_id: int
    rpc_url: str
    addresses: dict[str, str]  # contract name -> checksummed address
    abis: dict[str, list[dict[str, Any]]]  # contract name -> ABI
    start_block: int
    deployer: str
    roles: dict[str, str] = Field(default_factory=dict)  # e.g. {"matcher": 0x.., "settler": 0x..}
    params: dict[str, Any] = Field(default_factory=dict)  # the deploy parameters, for people

    def address(self, name: str) -> str:
        try:
            return self.addresses[name]
        except KeyError:
            raise NotFound(f"contract {name} is not in this deployment") from None

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> Deployment:
        if not path.exists():
            raise NotFound(f"no deployment at {path}: run `hashgrid deploy` first")
        return cls.model_validate(json.loads(path.read_text()))
