"""The provider's config file (TOML): which key, what the device offers, the asks, and the policy.

`render_config` writes it with a comment on every setting (what `hashgrid provider init` writes);
`load_config` reads it back, failing with the file and the field named. Wei amounts may be written as
integers or, above 2**63, as decimal strings (TOML integers are 64-bit).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from hashgrid.config import get_settings
from hashgrid.errors import ConfigError
from provider.policy import Policy

CONFIG_VERSION = 1
GRID = 10**18  # wei per GRID


def _wei(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, (bool, float)):
        raise ValueError("amounts are integers of wei (no floats)")
    return value


Wei = Annotated[int, BeforeValidator(_wei), Field(ge=0, lt=2**96)]


class KeyConfig(BaseModel):
    """Where the signing key comes from; HASHGRID_PROVIDER_KEY, when set, always wins."""

    model_config = ConfigDict(extra="forbid")
    keystore: Path | None = None
    address: str | None = None  # informational, written by init


class Offer(BaseModel):
    """What this provider sells at most, summed over the tasks it runs at once."""

    model_config = ConfigDict(extra="forbid")
    cores: int = Field(default=1, ge=1)
    memory_mb: int = Field(default=1024, ge=64)
    disk_mb: int = Field(default=4096, ge=64)
    gpus: int = Field(default=0, ge=0)


class Prices(BaseModel):
    """The provider's ask, in wei of GRID; a task pays at most its max_price_per_replica."""

    model_config = ConfigDict(extra="forbid")
    fixed: Wei = 10**15
    per_cpu_second: Wei = 10**13
    per_gb_second: Wei = 10**12
    per_gpu_second: Wei = 10**15


class Paths(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workdir: Path | None = None  # scratch dirs of runs; default <state_dir>/provider/work
    content: Path | None = None  # content store; default <state_dir>/provider/content


class ProviderConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")
    version: int = CONFIG_VERSION
    key: KeyConfig = Field(default_factory=KeyConfig)
    offer: Offer = Field(default_factory=Offer)
    prices: Prices = Field(default_factory=Prices)
    policy: Policy = Field(default_factory=Policy)
    paths: Paths = Field(default_factory=Paths)

    @property
    def workdir(self) -> Path:
        return self.paths.workdir or (get_settings().state_dir / "provider" / "work")

    @property
    def content_dir(self) -> Path:
        return self.paths.content or (get_settings().state_dir / "provider" / "content")


def default_config_path() -> Path:
    return get_settings().state_dir / "provider" / "provider.toml"


def load_config(path: Path | None = None) -> ProviderConfig:
    """Read the config file; a missing file gives the defaults (so `exec` works before `init`)."""
    path = path or default_config_path()
    if not path.exists():
        return ProviderConfig()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read provider config {path}: {exc}") from None
    try:
        return ProviderConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
                             for error in exc.errors(include_url=False))
        raise ConfigError(f"provider config {path} is invalid: {problems}") from None


def _toml(value: Any) -> str:
    """A TOML literal for the simple values this file holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value < 2**63 else json.dumps(str(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _grid(wei: int) -> str:
    return f"{wei / GRID:.6g} GRID"


def render_config(config: ProviderConfig) -> str:
    """The config as commented TOML, as `init` writes it."""
    key, offer, prices, policy = config.key, config.offer, config.prices, config.policy

    def line(name: str, value: Any, comment: str) -> str:
        if value is None:
            return f"# {name} = ...  # {comment}"
        return f"{name} = {_toml(value)}  # {comment}"

    sections = [
        "# Hashgrid provider configuration (written by `hashgrid provider init`; edit freely).",
        "# Amounts are in wei of GRID (1 GRID = 10**18 wei); write amounts above 2**63 as strings.",
        f"version = {config.version}",
        "",
        "[key]",
        "# The signing key. HASHGRID_PROVIDER_KEY (a raw 0x key, for automation) overrides the keystore.",
        "# The keystore's password comes from a prompt or HASHGRID_KEYSTORE_PASSWORD.",
        line("keystore", key.keystore, "eth-account encrypted keystore (scrypt)"),
        line("address", key.address, "the keystore's address, for reference"),
        "",
        "[offer]",
        "# What this device sells at most, summed over the tasks it runs at once.",
        line("cores", offer.cores, "CPU cores"),
        line("memory_mb", offer.memory_mb, "memory in MB"),
        line("disk_mb", offer.disk_mb, "scratch disk in MB"),
        line("gpus", offer.gpus, "GPUs (0: none offered)"),
        "",
        "[prices]",
        "# The ask; a task never pays more than its max_price_per_replica.",
        line("fixed", prices.fixed, f"per task ({_grid(prices.fixed)})"),
        line("per_cpu_second", prices.per_cpu_second, f"per CPU-second ({_grid(prices.per_cpu_second)})"),
        line("per_gb_second", prices.per_gb_second,
             f"per GB-second of memory, peak x wall ({_grid(prices.per_gb_second)})"),
        line("per_gpu_second", prices.per_gpu_second, f"per GPU-second ({_grid(prices.per_gpu_second)})"),
        "",
        "[policy]",
        "# What this device agrees to run; anything else is refused before it runs, with the reason.",
        line("runtimes", list(policy.runtimes), "allowed runtimes: docker, wasm"),
        line("docker_runtime", policy.docker_runtime,
             "auto: gVisor (runsc) when present, else docker; runsc: require gVisor; docker: plain runc"),
        line("allowed_images", policy.allowed_images, "docker image ids allowed by digest (sha256:...)"),
        line("allow_any_image", policy.allow_any_image, "true runs any image: only where you can lose it"),
        line("allowed_modules", policy.allowed_modules, "wasm module sha256s (used when allow_any_module = "
                                                        "false)"),
        line("allow_any_module", policy.allow_any_module, "wasm modules only see WASI, /in and /out"),
        line("trusted_signers", policy.trusted_signers,
             "addresses whose EIP-191 signature on an image/module digest allows it"),
        line("max_cpus", policy.max_cpus, "largest task accepted"),
        line("max_memory_mb", policy.max_memory_mb, ""),
        line("max_disk_mb", policy.max_disk_mb, "output cap of one task"),
        line("max_timeout_s", policy.max_timeout_s, ""),
        line("max_pids", policy.max_pids, ""),
        line("max_gpus", policy.max_gpus, ""),
        line("allow_network", policy.allow_network, "never give tasks network unless you mean it"),
        "",
        "[paths]",
        line("workdir", config.paths.workdir, "scratch dirs of runs (default: <state_dir>/provider/work)"),
        line("content", config.paths.content, "content store (default: <state_dir>/provider/content)"),
        "",
    ]
    return "\n".join(text.rstrip().removesuffix("  #") for text in sections)


def write_config(config: ProviderConfig, path: Path) -> None:
    """Write the commented config (and check it reads back to the same thing)."""
    text = render_config(config)
    if ProviderConfig.model_validate(tomllib.loads(text)) != config:
        raise ConfigError("internal: the rendered provider config does not read back the same")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
