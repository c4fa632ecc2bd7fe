"""Request bodies of the API (responses are the *Public models in marketplace/models.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
WEI_PATTERN = r"^[0-9]{1,30}$"
# the largest integer every JSON parser holds exactly (a double's 53 bits): the bound of ids and counters, so
# that a client in JavaScript, or a schema validator comparing as floats, reads the same number
MAX_JSON_INT = 2**53 - 1


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiweLoginIn(_Body):
    message: str = Field(max_length=4096, description="the EIP-4361 message text, as signed")
    signature: str = Field(max_length=200, description="0x hex, EIP-191 personal_sign of the message")


class TokenOut(BaseModel):
    token: str
    address: str
    expires: int = Field(description="unix seconds")
    token_type: str = "bearer"


class NonceOut(BaseModel):
    nonce: str
    expires: int


class Offer(_Body):
    """What the provider sells at most, summed over the tasks it runs at once."""

    cores: float = Field(default=1, gt=0, le=4096)
    memory_mb: int = Field(default=1024, ge=0, le=1 << 32)
    disk_mb: int = Field(default=4096, ge=0, le=1 << 40)
    gpus: int = Field(default=0, ge=0, le=64)


class ProviderRegisterIn(_Body):
    operator: str | None = Field(
        default=None, pattern=ADDRESS_PATTERN, description="operator address (default: the provider itself)"
    )
    capabilities: dict[str, Any] = Field(description="the daemon's device document (provider/detect.py)")
    capabilities_hash: str | None = Field(default=None, pattern=r"^(0x)?[0-9a-fA-F]{64}$")
    prices: dict[str, Annotated[str, Field(pattern=WEI_PATTERN)]] = Field(
        default_factory=dict, description="asks in wei as decimal strings: fixed, per_cpu_second, ..."
    )
    policy: dict[str, Any] = Field(default_factory=dict, description="policy summary: runtimes, limits...")
    offer: Offer = Field(default_factory=Offer)
    backends: dict[Literal["docker", "wasm", "gpu"], Literal["docker", "runsc", "wasm"]] = Field(
        default_factory=dict,
        description="the sandbox backend the daemon will really use per spec runtime, e.g. "
                    "{\"docker\": \"runsc\", \"wasm\": \"wasm\", \"gpu\": \"docker\"} (gpu: docker tasks "
                    "with GPUs): its runtime classes (docs/matching.md)")

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, str]) -> dict[str, str]:
        for name, amount in value.items():
            if not amount.isdigit() or len(amount) > 30:
                raise ValueError(f"price {name!r} must be wei as a decimal string, got {amount!r}")
        return value


class HeartbeatIn(_Body):
    free_cpus: float = Field(ge=0, le=4096)
    free_memory_mb: int = Field(ge=0, le=1 << 32)
    free_disk_mb: int = Field(default=0, ge=0, le=1 << 40)
    free_gpus: int = Field(default=0, ge=0, le=64)
    running: int = Field(default=0, ge=0, le=100_000)


class LogIn(_Body):
    data: str = Field(max_length=256 * 1024)
    seq: int | None = Field(default=None, ge=0, le=MAX_JSON_INT, description="the provider's chunk counter")


class OutputFile(_Body):
    path: str = Field(min_length=1, max_length=1024)
    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(ge=0, le=2**50)


class OutputsIn(_Body):
    files: list[OutputFile] = Field(max_length=4096)
    result_hash: str | None = Field(default=None, pattern=r"^(0x)?[0-9a-f]{64}$")


class UsageIn(_Body):
    """provider.daemon.usage_report: an EIP-191 signature by the provider over canonical JSON of `report`."""

    report: dict[str, Any]
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class StatusIn(_Body):
    status: Literal["refused", "running", "executed"]
    reason: str | None = Field(default=None, max_length=2000)
    result_hash: str | None = Field(default=None, pattern=r"^(0x)?[0-9a-f]{64}$")


class Ok(BaseModel):
    ok: bool = True
    detail: str | None = None
