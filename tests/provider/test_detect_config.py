"""Device detection, the provider config file and keystore, and `hashgrid provider init` / `info`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from hashgrid.canonical import canonical_json
from hashgrid.errors import ConfigError
from hashgrid.keystore import create_keystore, import_keystore, load_keystore, resolve_private_key
from provider.config import ProviderConfig, load_config, render_config
from provider.detect import capabilities_hash, detect

ROOT = Path(__file__).resolve().parents[2]


def test_detect_document_shape(tmp_path: Path) -> None:
    document = detect(tmp_path)
    assert document["version"] == 2
    assert set(document) == {"version", "cpu", "mem", "storage", "os", "gpus", "gpus_withheld",
                             "gpu_runtimes", "gpu_attach_notes", "runtimes"}
    cpu = document["cpu"]
    assert cpu["arch"] in ("x86_64", "aarch64") and 1 <= cpu["cores"] <= cpu["threads"] and cpu["model"]
    assert document["mem"]["total_mb"] >= document["mem"]["available_mb"] > 0
    assert document["storage"]["free_mb"] > 0 and document["storage"]["path"] == str(tmp_path)
    assert document["os"]["kernel"] and document["os"]["name"]
    assert document["gpus"] == []  # no accelerator on these machines
    assert {"docker", "runsc", "wasm"} <= set(document["runtimes"])  # setup installs and starts all three
    canonical_json(document)  # JSON-able and canonicalizable


def test_stable_document_for_the_capabilities_hash(tmp_path: Path) -> None:
    stable = detect(tmp_path, volatile=False)
    assert "available_mb" not in stable["mem"] and "free_mb" not in stable["storage"]
    assert capabilities_hash(stable) == capabilities_hash(detect(tmp_path, volatile=False))
    assert len(capabilities_hash(stable)) == 32


def test_config_round_trip_with_comments(tmp_path: Path) -> None:
    config = ProviderConfig.model_validate({"prices": {"fixed": 2**70}, "policy": {"allow_network": False}})
    text = render_config(config)
    assert text.count("#") > 20 and '"1180591620717411303424"' in text
    path = tmp_path / "provider.toml"
    path.write_text(text)
    assert load_config(path) == config


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "provider.toml"
    path.write_text("[policy]\nmax_cpus = 'many'\n")
    with pytest.raises(ConfigError, match=r"policy\.max_cpus"):
        load_config(path)


def test_keystore_create_import_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = create_keystore(tmp_path / "new.json", "pw")
    assert Account.from_key(load_keystore(tmp_path / "new.json", "pw")).address == address
    assert oct((tmp_path / "new.json").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError, match="wrong password"):
        load_keystore(tmp_path / "new.json", "nope")
    key = "0x" + "42" * 32
    assert import_keystore(tmp_path / "imported.json", key, "pw") == Account.from_key(key).address
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        import_keystore(tmp_path / "imported.json", key, "pw")
    monkeypatch.delenv("HASHGRID_PROVIDER_KEY", raising=False)
    monkeypatch.setenv("HASHGRID_KEYSTORE_PASSWORD", "pw")
    assert resolve_private_key(tmp_path / "imported.json") == key
    monkeypatch.setenv("HASHGRID_PROVIDER_KEY", "0x" + "43" * 32)
    assert resolve_private_key(tmp_path / "imported.json") == "0x" + "43" * 32
    anvil0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    monkeypatch.setenv("HASHGRID_PROVIDER_KEY", anvil0)
    with pytest.raises(ConfigError, match="dev key"):
        resolve_private_key(None, chain_id=1)


def _hashgrid(*args: str, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, HASHGRID_STATE_DIR=str(state), COLUMNS="200", **env)
    return subprocess.run([sys.executable, "-m", "hashgrid.cli", "provider", *args], capture_output=True,
                          text=True, env=environment, cwd=ROOT, timeout=120)


def test_init_non_interactive_writes_a_commented_config(tmp_path: Path) -> None:
    key = "0x" + "24" * 32
    completed = _hashgrid("init", "--yes", "--import-key-env", "MY_KEY", "--cores", "1",
                          "--memory-mb", "2048",
                          "--price-fixed", "0.002GRID", "--allow-image", "sha256:" + "ab" * 32,
                          state=tmp_path, MY_KEY=key, HASHGRID_KEYSTORE_PASSWORD="secret")
    assert completed.returncode == 0, completed.stderr
    path = tmp_path / "provider" / "provider.toml"
    config = load_config(path)
    assert config.offer.cores == 1 and config.offer.memory_mb == 2048
    assert config.prices.fixed == 2 * 10**15
    assert config.policy.allowed_images == ["sha256:" + "ab" * 32]
    assert config.key.keystore is not None
    assert load_keystore(config.key.keystore, "secret") == key
    assert "# What this device agrees to run" in path.read_text()
    again = _hashgrid("init", "--yes", "--env-key", state=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_init_rerun_after_an_interruption_reuses_the_keystore(tmp_path: Path) -> None:
    """An init that wrote its keystore but no config (Ctrl-C at a question) can simply be run again."""
    keystore = tmp_path / "provider" / "provider-key.json"
    address = create_keystore(keystore, "secret")
    done = _hashgrid("init", "--yes", state=tmp_path, HASHGRID_KEYSTORE_PASSWORD="secret")
    assert done.returncode == 0, done.stderr
    assert "reused" in done.stdout
    config = load_config(tmp_path / "provider" / "provider.toml")
    assert config.key.address == address
    # the bundled sample images run out of the box, and init says which images it allows
    bundled = set(json.loads((ROOT / "build/images.json").read_text()).values())
    assert bundled and set(config.policy.allowed_images) == bundled
    assert "docker images this provider runs: sha256:" in done.stdout
    wrong = _hashgrid("init", "--yes", "--force", state=tmp_path, HASHGRID_KEYSTORE_PASSWORD="nope")
    assert wrong.returncode == 2 and "wrong password" in wrong.stderr
    other = _hashgrid("init", "--yes", "--force", "--import-key-env", "K", state=tmp_path,
                      HASHGRID_KEYSTORE_PASSWORD="secret", K="0x" + "25" * 32)
    assert other.returncode == 2 and "never overwritten" in other.stderr
    assert Account.from_key(load_keystore(keystore, "secret")).address == address


def test_init_without_password_in_automation_fails_clearly(tmp_path: Path) -> None:
    completed = _hashgrid("init", "--yes", state=tmp_path)
    assert completed.returncode == 2 and "HASHGRID_KEYSTORE_PASSWORD" in completed.stderr


def test_info_json(tmp_path: Path) -> None:
    completed = _hashgrid("info", "--json", state=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert set(json.loads(completed.stdout)) >= {"cpu", "mem", "storage", "os", "gpus", "runtimes"}
