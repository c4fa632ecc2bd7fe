"""The live daemon on a host without an attachable GPU: a GPU task assigned to it on chain is refused before
it runs, with the detection's reason, and never committed (`hashgrid provider run` in a subprocess, real
anvil)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hashgrid.chain.contracts import Contracts
from provider.config import Offer, ProviderConfig, write_config
from provider.policy import Policy
from scripts.devnet import DevAccounts
from tests.provider.test_daemon import (
    DaemonProcess,
    launch,
    post_and_assign,
    provider_events,
    upload_spec,
)

__all__ = ["launch"]  # the fixture, found by pytest as a module attribute


def test_gpu_task_is_refused_by_a_daemon_without_an_attachable_gpu(
        launch: Callable[..., DaemonProcess], contracts: Contracts, dev_accounts: DevAccounts,
        busybox_image: str, tmp_path: Path) -> None:
    spec = upload_spec(tmp_path / "content", {
        "runtime": "docker", "image": busybox_image, "outputs": ["count.txt"],
        "command": ["sh", "-c", "ls /dev/nvidia0 > /out/count.txt"],
        "resources": {"cpus": 1, "memory_mb": 64, "disk_mb": 4, "timeout_s": 30, "gpus": 1}},
        replicas=1, quorum=1)
    config = tmp_path / "provider.toml"  # the provider allows a GPU task and offers one GPU it does not have
    policy = Policy(allowed_images=[busybox_image], max_gpus=1)
    write_config(ProviderConfig(policy=policy, offer=Offer(gpus=1)), config)
    provider = dev_accounts.providers[1]
    task_id = post_and_assign(contracts, dev_accounts, spec, [provider])
    daemon = launch(provider, "provider", "--once", "--config", str(config))
    assert daemon.wait(120) == 0, daemon.log()
    row = daemon.task(task_id)
    assert row is not None and row["phase"] == "refused", daemon.log()
    assert "offers 0 GPU(s) that a sandbox can attach (no GPU detected)" in row["reason"]
    assert provider_events(contracts, task_id, "ResultCommitted", provider.address) == 0
