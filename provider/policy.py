"""The provider's policy: what this device agrees to run, checked before anything runs.

A refusal names its reason (it goes back to the marketplace). Images are allowed by digest, or by an
EIP-191 signature from a key the provider trusts, carried in the spec (`image_signature`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from eth_account import Account
from eth_account.messages import encode_defunct
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hashgrid.errors import PolicyRefused
from hashgrid.spec import TaskSpec, artifact_signing_message
from provider.gpu import describe

log = logging.getLogger(__name__)

DockerRuntimeChoice = Literal["auto", "runsc", "docker"]


class Policy(BaseModel):
    """What a provider allows. Defaults are cautious: no network, images only when listed or signed."""

    model_config = ConfigDict(extra="forbid")

    runtimes: list[Literal["docker", "wasm"]] = Field(default_factory=lambda: ["docker", "wasm"])  # type: ignore[arg-type]
    docker_runtime: DockerRuntimeChoice = Field(
        default="auto", description="auto: gVisor (runsc) when the engine has it, else docker; "
                                    "runsc: require gVisor (refuse docker tasks without it); docker: plain "
                                    "runc")
    allowed_images: list[str] = Field(default_factory=list, description="image ids 'sha256:<hex>'")
    allow_any_image: bool = False
    allowed_modules: list[str] = Field(default_factory=list, description="wasm module sha256 hex")
    allow_any_module: bool = True  # wasm has no syscalls beyond WASI: any module is the default
    trusted_signers: list[str] = Field(default_factory=list, description="0x addresses whose signed images "
                                                                         "run")
    max_cpus: float = 2.0
    max_memory_mb: int = 4096
    max_disk_mb: int = 4096
    max_timeout_s: int = 3600
    max_pids: int = 1024
    max_gpus: int = 0
    allow_network: bool = False

    @field_validator("allowed_images")
    @classmethod
    def _images(cls, value: list[str]) -> list[str]:
        out = []
        for image in value:
            image = image.lower()
            if not image.startswith("sha256:"):
                image = "sha256:" + image
            if len(image) != 71:
                raise ValueError(f"allowed image {image!r} is not an image id 'sha256:<64 hex>'")
            out.append(image)
        return out

    @field_validator("allowed_modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        return [module.lower().removeprefix("sha256:") for module in value]

    @field_validator("trusted_signers")
    @classmethod
    def _signers(cls, value: list[str]) -> list[str]:
        for signer in value:
            if not (signer.startswith("0x") and len(signer) == 42):
                raise ValueError(f"trusted signer {signer!r} is not a 0x address")
        return [signer.lower() for signer in value]


def sign_artifact(runtime: str, digest: str, private_key: str) -> dict[str, str]:
    """Sign an image id or module digest with a key (for publishers of images; returns the spec's field)."""
    account = Account.from_key(private_key)
    signed = account.sign_message(encode_defunct(text=artifact_signing_message(runtime, digest)))
    signature = signed.signature.hex()
    return {"signer": account.address.lower(), "signature": signature if signature.startswith("0x")
            else "0x" + signature}


def _signature_vouches(spec: TaskSpec, policy: Policy) -> tuple[bool, str]:
    """Whether the spec's artifact signature is valid and from a trusted key; else why not."""
    signature = spec.image_signature
    if signature is None:
        return False, "no signature"
    if signature.signer not in policy.trusted_signers:
        return False, f"signer {signature.signer} is not a trusted signer"
    message = encode_defunct(text=artifact_signing_message(spec.runtime, spec.artifact_digest))
    try:
        recovered = Account.recover_message(message, signature=signature.signature).lower()
    except Exception as exc:  # eth-account raises several types for malformed signatures
        return False, f"signature is malformed ({exc})"
    if recovered != signature.signer:
        return False, f"signature was made by {recovered}, not by the claimed signer {signature.signer}"
    return True, f"signed by trusted key {signature.signer}"


def _check_artifact(spec: TaskSpec, policy: Policy) -> None:
    if spec.runtime == "docker":
        image = spec.image_id
        if policy.allow_any_image or image in policy.allowed_images:
            return
        ok, why = _signature_vouches(spec, policy)
        if not ok:
            raise PolicyRefused(f"image {image} is not allowed: not in allowed_images and {why}",
                                image=image)
    else:
        module = spec.module
        if policy.allow_any_module or module in policy.allowed_modules:
            return
        ok, why = _signature_vouches(spec, policy)
        if not ok:
            raise PolicyRefused(f"wasm module sha256:{module} is not allowed: not in allowed_modules and "
                                f"{why}",
                                module=module)


def _device_value(device: Mapping[str, Any] | None, *keys: str) -> Any:
    value: Any = device
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def check(spec: TaskSpec, policy: Policy, device: Mapping[str, Any] | None = None) -> None:
    """Raise PolicyRefused with the first reason the task cannot run here; return None when it may.

    `device` is the detect document (provider.detect.detect()); without it only the policy is checked.
    """
    if spec.runtime not in policy.runtimes:
        names = ", ".join(policy.runtimes)
        raise PolicyRefused(f"runtime {spec.runtime!r} is not allowed (allowed: {names})")
    if spec.network and not policy.allow_network:
        raise PolicyRefused("the task asks for network access and this provider never allows network")
    resources = spec.resources
    limits: list[tuple[str, float, float]] = [
        ("cpus", resources.cpus, policy.max_cpus),
        ("memory_mb", resources.memory_mb, policy.max_memory_mb),
        ("disk_mb", resources.disk_mb, policy.max_disk_mb),
        ("timeout_s", resources.timeout_s, policy.max_timeout_s),
        ("pids", resources.pids, policy.max_pids),
        ("gpus", resources.gpus, policy.max_gpus),
    ]
    for name, asked, allowed in limits:
        if asked > allowed:
            raise PolicyRefused(f"resources.{name}={asked} is above this provider's maximum of {allowed}",
                                resource=name, asked=asked, allowed=allowed)
    _check_artifact(spec, policy)
    if device is None:
        return
    runtimes = _device_value(device, "runtimes") or []
    if spec.runtime == "docker" and not ({"docker", "runsc"} & set(runtimes)):
        raise PolicyRefused("this device has no working docker engine")
    if spec.runtime == "wasm" and "wasm" not in runtimes:
        raise PolicyRefused("this device has no working wasm runtime")
    threads = _device_value(device, "cpu", "threads")
    if threads is not None and resources.cpus > threads:
        raise PolicyRefused(f"resources.cpus={resources.cpus} is more than this device's {threads} threads")
    total_mb = _device_value(device, "mem", "total_mb")
    if total_mb is not None and resources.memory_mb > total_mb:
        raise PolicyRefused(f"resources.memory_mb={resources.memory_mb} is more than this device's "
                            f"{total_mb} MB")
    gpus = _device_value(device, "gpus") or []
    if resources.gpus > len(gpus):
        withheld = _device_value(device, "gpus_withheld") or []
        detail = "; ".join(f"{describe(g)} is not offered: {g.get('reason')}" for g in withheld)
        raise PolicyRefused(f"resources.gpus={resources.gpus} but this device offers {len(gpus)} GPU(s) "
                            f"that a sandbox can attach ({detail or 'no GPU detected'})",
                            resource="gpus", asked=resources.gpus, allowed=len(gpus))
    requirements = spec.requirements
    arch = _device_value(device, "cpu", "arch")
    if requirements.arch and arch and requirements.arch != arch:
        raise PolicyRefused(f"requirements.arch={requirements.arch} but this device is {arch}")
    if requirements.gpu_model and not any(requirements.gpu_model.lower() in str(g.get("model", "")).lower()
                                          for g in gpus):
        raise PolicyRefused(f"requirements.gpu_model={requirements.gpu_model!r} matches no GPU on this "
                            "device")
    least = requirements.min_gpu_memory_mb
    if resources.gpus and least and any((g.get("memory_mb") or 0) < least for g in gpus):
        raise PolicyRefused(f"requirements.min_gpu_memory_mb={least} but a GPU here has less")


def backend_for(runtime: str, policy: Policy, available: Iterable[str], *, gpu: bool = False,
                device: Mapping[str, Any] | None = None) -> str | None:
    """The backend that runs spec runtime `runtime` here ("runsc" | "docker" | "wasm"), for a GPU task when
    `gpu`; None if none does: what the daemon registers as its runtime classes (hashgrid/runtime_class.py),
    and the choice `choose_runtime` makes."""
    have = set(available)
    if gpu:
        have &= set(_device_value(device, "gpu_runtimes") or []) if device is not None else set()
    if runtime == "wasm":
        return "wasm" if "wasm" in have and "wasm" in policy.runtimes else None
    if runtime != "docker" or "docker" not in policy.runtimes:
        return None
    if policy.docker_runtime == "runsc":
        return "runsc" if "runsc" in have else None
    if policy.docker_runtime == "auto" and "runsc" in have:
        return "runsc"
    return "docker" if "docker" in have else None


def choose_runtime(spec: TaskSpec, policy: Policy, available: Iterable[str],
                   device: Mapping[str, Any] | None = None) -> str:
    """The backend name for this task: "runsc" | "docker" | "wasm".

    docker tasks run under gVisor when the engine has runsc and the policy says "auto" or "runsc";
    a "runsc" policy refuses rather than fall back to plain docker. A GPU task runs only on a backend that
    attaches GPUs here (`device["gpu_runtimes"]`): runsc without gVisor's GPU proxy is refused with why.
    """
    have = set(available)
    if spec.resources.gpus and device is not None:
        can = set(_device_value(device, "gpu_runtimes") or [])
        notes = _device_value(device, "gpu_attach_notes") or {}
        if policy.docker_runtime == "runsc" and "runsc" in have and "runsc" not in can:
            raise PolicyRefused("policy requires gVisor (docker_runtime = \"runsc\") but runsc cannot attach "
                                f"a GPU here: {notes.get('runsc') or 'no GPU probe passed under runsc'}")
        have &= can | {"wasm"}
    if spec.runtime == "wasm":
        if "wasm" not in have:
            raise PolicyRefused("the wasm runtime is not available on this device")
        return "wasm"
    if policy.docker_runtime == "runsc":
        if "runsc" not in have:
            raise PolicyRefused("policy requires gVisor (docker_runtime = \"runsc\") but runsc is not "
                                "available")
        return "runsc"
    if policy.docker_runtime == "auto" and "runsc" in have:
        return "runsc"
    if "docker" not in have:
        raise PolicyRefused("the docker engine is not available on this device")
    return "docker"
