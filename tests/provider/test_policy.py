"""Provider policy: images by digest or trusted signature, resource caps, network, runtime choice."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from hashgrid.errors import PolicyRefused
from hashgrid.spec import TaskSpec, parse_spec
from provider.policy import Policy, check, choose_runtime, sign_artifact

IMAGE = "sha256:" + "ab" * 32
OTHER_IMAGE = "sha256:" + "ba" * 32
MODULE = "cd" * 32
TRUSTED = Account.from_key("0x" + "11" * 32)
UNTRUSTED = Account.from_key("0x" + "22" * 32)
TRUSTING = Policy(trusted_signers=[TRUSTED.address])
DEVICE: dict[str, Any] = {"cpu": {"arch": "x86_64", "cores": 2, "threads": 2}, "mem": {"total_mb": 8192},
                          "gpus": [], "runtimes": ["docker", "runsc", "wasm"]}


def spec(**changes: Any) -> TaskSpec:
    data: dict[str, Any] = {"version": 1, "name": "t", "runtime": "docker", "image": IMAGE,
                            "command": ["true"],
                            "resources": {"cpus": 1, "memory_mb": 256}}
    data.update(changes)
    return parse_spec(data)


def refused(task: TaskSpec, policy: Policy, device: dict[str, Any] | None = DEVICE) -> str:
    with pytest.raises(PolicyRefused) as caught:
        check(task, policy, device)
    assert caught.value.code == "policy_refused"
    return caught.value.reason


def test_allowed_image_by_digest() -> None:
    check(spec(), Policy(allowed_images=[IMAGE]), DEVICE)


def test_disallowed_image_refused() -> None:
    reason = refused(spec(image=OTHER_IMAGE), Policy(allowed_images=[IMAGE]))
    assert OTHER_IMAGE in reason and "not in allowed_images" in reason


def test_image_signed_by_trusted_key_allowed() -> None:
    signature = sign_artifact("docker", OTHER_IMAGE, TRUSTED.key.hex())
    check(spec(image=OTHER_IMAGE, image_signature=signature), TRUSTING, DEVICE)


def test_image_signed_by_untrusted_key_refused() -> None:
    signature = sign_artifact("docker", OTHER_IMAGE, UNTRUSTED.key.hex())
    reason = refused(spec(image=OTHER_IMAGE, image_signature=signature), TRUSTING)
    assert "not a trusted signer" in reason


def test_forged_signer_claim_refused() -> None:
    """A signature made by an untrusted key that claims to come from the trusted address."""
    signature = sign_artifact("docker", OTHER_IMAGE, UNTRUSTED.key.hex())
    forged = {"signer": TRUSTED.address, "signature": signature["signature"]}
    reason = refused(spec(image=OTHER_IMAGE, image_signature=forged), TRUSTING)
    assert "not by the claimed signer" in reason


def test_signature_for_another_image_refused() -> None:
    signature = sign_artifact("docker", IMAGE, TRUSTED.key.hex())
    reason = refused(spec(image=OTHER_IMAGE, image_signature=signature), TRUSTING)
    assert "not by the claimed signer" in reason


def test_module_policy() -> None:
    wasm = spec(runtime="wasm", image=None, module=MODULE)
    check(wasm, Policy(), DEVICE)  # any module by default
    assert "not in allowed_modules" in refused(wasm, Policy(allow_any_module=False))
    check(wasm, Policy(allow_any_module=False, allowed_modules=[MODULE]), DEVICE)
    signature = sign_artifact("wasm", f"sha256:{MODULE}", TRUSTED.key.hex())
    signed = spec(runtime="wasm", image=None, module=MODULE, image_signature=signature)
    check(signed, Policy(allow_any_module=False, trusted_signers=[TRUSTED.address]), DEVICE)


def test_signature_does_not_cross_runtimes() -> None:
    """A module signature over the same hex cannot pass for an image."""
    signature = sign_artifact("wasm", IMAGE, TRUSTED.key.hex())
    refused(spec(image_signature=signature), Policy(trusted_signers=[TRUSTED.address]))


@pytest.mark.parametrize(("resources", "name"), [
    ({"cpus": 4}, "cpus"), ({"memory_mb": 8192}, "memory_mb"), ({"disk_mb": 9000}, "disk_mb"),
    ({"timeout_s": 7200}, "timeout_s"), ({"pids": 5000}, "pids"), ({"gpus": 1}, "gpus"),
])
def test_too_many_resources_refused(resources: dict[str, Any], name: str) -> None:
    reason = refused(spec(resources=resources), Policy(allow_any_image=True, max_cpus=2, max_memory_mb=4096))
    assert f"resources.{name}=" in reason and "maximum" in reason


def test_network_refused_unless_allowed() -> None:
    assert "network" in refused(spec(network=True), Policy(allow_any_image=True))
    check(spec(network=True), Policy(allow_any_image=True, allow_network=True), DEVICE)


def test_runtime_not_allowed() -> None:
    reason = refused(spec(), Policy(runtimes=["wasm"], allow_any_image=True))
    assert "runtime 'docker' is not allowed" in reason


def test_device_limits() -> None:
    policy = Policy(allow_any_image=True, max_cpus=64, max_memory_mb=10**6, max_gpus=4)
    assert "threads" in refused(spec(resources={"cpus": 8}), policy)
    assert "this device's 8192 MB" in refused(spec(resources={"memory_mb": 16384}), policy)
    assert "GPU" in refused(spec(resources={"gpus": 1}), policy)
    assert "arch" in refused(spec(requirements={"arch": "aarch64"}), policy)
    assert "no working docker" in refused(spec(), policy, dict(DEVICE, runtimes=["wasm"]))


def test_choose_runtime() -> None:
    docker_task, wasm_task = spec(), spec(runtime="wasm", image=None, module=MODULE)
    everything = ["docker", "runsc", "wasm"]
    assert choose_runtime(docker_task, Policy(docker_runtime="auto"), everything) == "runsc"
    assert choose_runtime(docker_task, Policy(docker_runtime="auto"), ["docker"]) == "docker"
    assert choose_runtime(docker_task, Policy(docker_runtime="docker"), everything) == "docker"
    assert choose_runtime(docker_task, Policy(docker_runtime="runsc"), everything) == "runsc"
    with pytest.raises(PolicyRefused, match="requires gVisor"):
        choose_runtime(docker_task, Policy(docker_runtime="runsc"), ["docker", "wasm"])
    assert choose_runtime(wasm_task, Policy(), everything) == "wasm"
    with pytest.raises(PolicyRefused, match="wasm runtime is not available"):
        choose_runtime(wasm_task, Policy(), ["docker"])
