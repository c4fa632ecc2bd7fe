"""Compile the contracts with py-solc-x through the project's `solc` (scripts/solc), with forge's settings.

Output (ABI and bytecode per contract, OpenZeppelin's TimelockController included) is cached under
build/solc/<sha256 of sources and settings>.json, so a second compile with unchanged sources is instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hashgrid.config import REPO_ROOT
from hashgrid.errors import ConfigError

SOURCES_DIR = Path("contracts/src")
OZ_PREFIX = "@openzeppelin/contracts/"
OZ_DIR = Path("node_modules/@openzeppelin/contracts")
TIMELOCK_SOURCE = "node_modules/@openzeppelin/contracts/governance/TimelockController.sol"
CACHE_DIR = Path("build/solc")


@dataclass(frozen=True)
class CompiledContract:
    name: str
    source: str
    abi: list[dict[str, Any]]
    bytecode: str  # 0x-prefixed creation code

    @property
    def deployable(self) -> bool:
        return len(self.bytecode) > 2


def solc_binary(root: Path = REPO_ROOT) -> Path:
    """SOLC_BINARY if set, else the repo's wrapper (which itself prefers a native solc when found)."""
    named = os.environ.get("SOLC_BINARY")
    path = Path(named) if named else root / "scripts" / "solc"
    if not path.exists():
        raise ConfigError(f"no solc at {path}: run `make setup` first")
    return path


def _forge_profile(root: Path) -> dict[str, Any]:
    path = root / "foundry.toml"
    if not path.exists():
        return {}
    with path.open("rb") as fh:
        return dict(tomllib.load(fh).get("profile", {}).get("default", {}))


def _settings(root: Path, source_names: list[str]) -> dict[str, Any]:
    profile = _forge_profile(root)
    settings: dict[str, Any] = {
        "remappings": [f"{OZ_PREFIX}={OZ_DIR.as_posix()}/"],
        "optimizer": {
            "enabled": bool(profile.get("optimizer", True)),
            "runs": int(profile.get("optimizer_runs", 200)),
        },
        "viaIR": bool(profile.get("via_ir", False)),
        "outputSelection": {name: {"*": ["abi", "evm.bytecode.object"]} for name in source_names},
    }
    if "evm_version" in profile:
        settings["evmVersion"] = profile["evm_version"]
    return settings


def _sources(root: Path) -> dict[str, dict[str, str]]:
    src = root / SOURCES_DIR
    files = sorted(src.rglob("*.sol"))
    if not files:
        raise ConfigError(f"no Solidity sources under {src}")
    sources = {f.relative_to(root).as_posix(): {"content": f.read_text()} for f in files}
    timelock = root / TIMELOCK_SOURCE
    if not timelock.exists():
        raise ConfigError(f"OpenZeppelin contracts missing ({timelock}): run `make setup` first")
    sources[TIMELOCK_SOURCE] = {"content": timelock.read_text()}
    return sources


def _fingerprint(root: Path, input_json: dict[str, Any], solc: Path) -> str:
    digest = hashlib.sha256(json.dumps(input_json, sort_keys=True).encode())
    oz_package = root / OZ_DIR / "package.json"
    if oz_package.exists():  # imported OZ files are not inlined: their version stands for them
        digest.update(oz_package.read_bytes())
    digest.update(solc.read_bytes()[:65536] if solc.is_file() else str(solc).encode())
    return digest.hexdigest()


def compile_contracts(root: Path = REPO_ROOT, *, use_cache: bool = True) -> dict[str, CompiledContract]:
    """Compile contracts/src and TimelockController; returns every contract of those files by name."""
    sources = _sources(root)
    input_json = {"language": "Solidity", "sources": sources, "settings": _settings(root, list(sources))}
    solc = solc_binary(root)
    cache = root / CACHE_DIR / f"{_fingerprint(root, input_json, solc)}.json"
    if use_cache and cache.exists():
        output = json.loads(cache.read_text())
    else:
        output = _run_solc(root, input_json, solc)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(output))
        tmp.replace(cache)
    return _contracts(output)


def _run_solc(root: Path, input_json: dict[str, Any], solc: Path) -> dict[str, Any]:
    import solcx  # imported lazily: most processes only load the cached output
    from solcx.exceptions import SolcError

    try:
        raw = solcx.compile_standard(
            input_json, base_path=str(root), allow_paths=[str(root)], solc_binary=str(solc)
        )
    except SolcError as exc:
        raise ConfigError(f"solc failed: {exc.message if hasattr(exc, 'message') else exc}") from exc
    return {"contracts": raw.get("contracts", {})}


def _contracts(output: dict[str, Any]) -> dict[str, CompiledContract]:
    compiled: dict[str, CompiledContract] = {}
    for source, contracts in output["contracts"].items():
        for name, data in contracts.items():
            bytecode = data.get("evm", {}).get("bytecode", {}).get("object", "")
            compiled[name] = CompiledContract(
                name=name, source=source, abi=data["abi"], bytecode="0x" + bytecode.removeprefix("0x")
            )
    return compiled
