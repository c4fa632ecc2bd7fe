"""`hashgrid up`'s supervisor heals the network: a provider process that dies is restarted with back-off (its
log kept, its pid file updated), while the death of a process the network cannot lose (the chain, the
marketplace) still fails the run. Real child processes, SIGKILLed; polling under deadlines."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from scripts.up import RESTART_FIRST_S, StateDir, Supervisor, UpFailed, clean_env
from tests.polling import wait_for

SLEEPER = [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(600)"]


def test_a_dead_provider_is_restarted_with_back_off_and_a_dead_marketplace_fails_the_run(tmp_path) -> None:
    supervisor = Supervisor(StateDir(tmp_path))
    env = clean_env()
    try:
        first = supervisor.spawn("provider1", SLEEPER, env, restart=True)
        supervisor.spawn("marketplace", SLEEPER, env)
        wait_for(lambda: "up" in first.log.read_text(), timeout=30, what="the provider started")
        pids = [first.process.pid]

        def restarted() -> bool:
            supervisor.check()
            now = next(p for p in supervisor.procs if p.name == "provider1")
            return now.alive() and now.process.pid != pids[-1]

        for round_no in range(2):
            os.killpg(pids[-1], signal.SIGKILL)
            wait_for(restarted, timeout=30, what=f"restart {round_no + 1}")
            now = next(p for p in supervisor.procs if p.name == "provider1")
            pids.append(now.process.pid)
            assert (tmp_path / "pids" / "provider1.pid").read_text().strip() == str(now.process.pid)
            wait_for(lambda: first.log.read_text().count("up") == len(pids), timeout=30,  # noqa: B023
                     what="the restarted provider up, its output appended to the same log")
        # it kept dying at once: the second wait was twice the first
        assert [h["delay_s"] for h in supervisor.healed] == [RESTART_FIRST_S, 2 * RESTART_FIRST_S]
        assert [h["status"] for h in supervisor.healed] == [-signal.SIGKILL, -signal.SIGKILL]

        marketplace = next(p for p in supervisor.procs if p.name == "marketplace")
        os.killpg(marketplace.process.pid, signal.SIGKILL)
        marketplace.process.wait(timeout=30)
        with pytest.raises(UpFailed, match="marketplace exited unexpectedly"):
            supervisor.check()
    finally:
        supervisor.stop_all()
    assert not any(p.alive() for p in supervisor.procs)
