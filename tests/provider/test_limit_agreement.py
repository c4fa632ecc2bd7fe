"""One limit-hitting spec on real Docker under runc and under gVisor (runsc): the backends report different
exit statuses and leave different partial outputs (measured in docs/result-hash.md), yet the executor's result
hashes agree, because a kill by a limit hashes as the limit alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hashgrid.canonical import hash_document
from hashgrid.content import ContentStore
from hashgrid.spec import parse_spec
from provider.executor import Execution, execute
from provider.policy import Policy
from provider.runtimes import get_runtime

# each: script, resources, the kill reason both backends must report
LIMITS: dict[str, tuple[str, dict[str, Any], str]] = {
    # runc: forks fail, the shell keeps going until the timeout kill (exit 137); gVisor: it gives up (exit 2)
    "fork bomb": ("echo start > /out/log; f(){ f | f & }; f; sleep 30",
                  {"pids": 20, "timeout_s": 4}, "pids"),
    "memory hog": ("echo start > /out/log; awk 'BEGIN { s = \"x\"; while (1) s = s s }'",
                   {"memory_mb": 64, "timeout_s": 30}, "memory"),
    "output cap": ("yes 0123456789abcdef > /out/log", {"disk_mb": 2, "timeout_s": 30}, "output_too_large"),
}


def run(store: ContentStore, image: str, script: str, resources: dict[str, Any], backend: str,
        work: Path) -> Execution:
    spec = parse_spec({"version": 1, "name": "limit", "runtime": "docker", "image": image,
                       "command": ["sh", "-c", script], "outputs": ["log"], "include_stdout": True,
                       "resources": {"cpus": 1, **resources}})
    policy = Policy(docker_runtime=backend, allowed_images=[image])  # type: ignore[arg-type]
    return execute(spec, store=store, policy=policy, workdir=work)


@pytest.mark.parametrize("case", list(LIMITS))
def test_runc_and_runsc_agree_on_a_limit_kill(case: str, busybox_image: str, tmp_path: Path) -> None:
    assert get_runtime("runsc").available(), "runsc is installed by make setup"
    script, resources, reason = LIMITS[case]
    store = ContentStore(tmp_path / "store")
    runc = run(store, busybox_image, script, resources, "docker", tmp_path / "work")
    gvisor = run(store, busybox_image, script, resources, "runsc", tmp_path / "work")
    assert (runc.runtime, gvisor.runtime) == ("docker", "runsc")
    assert runc.kill_reason == gvisor.kill_reason == reason
    assert runc.result_hash.document == gvisor.result_hash.document == {"version": 1, "killed": reason}
    assert runc.result_hash.digest == gvisor.result_hash.digest == hash_document({"version": 1,
                                                                                  "killed": reason})

