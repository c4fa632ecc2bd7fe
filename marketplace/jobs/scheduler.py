"""The in-process runner, used when no Redis URL is configured (the embedded default for `make up`): a
background thread per lane runs that lane's jobs at their intervals, one after another. Jobs are the same
functions Celery runs; a failure is logged and the job simply runs again at its next tick (every job is
idempotent).

Two lanes: "assign" (index the chain, then match what was posted) and "jobs" (everything else). A post waits
for the indexer and the matcher only, never behind a settlement round; the two lanes run concurrently as
Celery workers would, safe by the same leases and claims (marketplace.jobs.leases)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marketplace.jobs.context import JobContext, JobSettings

log = logging.getLogger(__name__)


HEAD_POLL_S = 0.05  # the assign lane asks for the chain head this often (one eth_blockNumber)
ASSIGN, JOBS = "assign", "jobs"


@dataclass
class Periodic:
    name: str
    interval_s: float
    run: Callable[[], Any]
    next_at: float = 0.0
    lane: str = JOBS


class HeadWatch:
    """Index when the chain head moved (or `interval_s` passed): a post is indexed within HEAD_POLL_S of its
    block instead of within the index interval, and an idle chain costs one RPC per poll, no database."""

    def __init__(self, ctx: JobContext, interval_s: float) -> None:
        self.ctx, self.interval_s = ctx, interval_s
        self.head: int | None = None  # the head when the last index run began
        self.seen: int | None = None
        self.ran_at = float("-inf")

    def due(self) -> bool:
        """True when an index run may find something. An unreachable chain is left to index_chain to
        report, at `interval_s` (not at every poll)."""
        try:
            self.seen = self.ctx.client.block_number()
        except Exception:  # noqa: BLE001 - web3 raises connection errors of several types
            self.seen = None
        if self.seen is not None and self.seen != self.head:
            return True
        return time.monotonic() - self.ran_at >= self.interval_s

    def ran(self) -> None:
        self.head, self.ran_at = self.seen, time.monotonic()


def _assigned(outcome: dict[str, Any] | None) -> bool:
    return bool(outcome and outcome.get("assigned"))


def periodic_jobs(ctx: JobContext, *, on_assigned: Callable[[], Any] | None = None) -> list[Periodic]:
    """The jobs and their intervals from the settings (the same schedule Celery beat uses). `on_assigned`
    is called after a matching round sent assignments (the API wakes its long-polls with it)."""
    from marketplace.jobs.canary import post_canaries
    from marketplace.jobs.jobs import check_deadlines, expire_heartbeats, index_chain, run_matching_round
    from marketplace.jobs.settle import settle_tasks

    s = ctx.settings
    watch = HeadWatch(ctx, s.index_interval_s)

    def matched(outcome: dict[str, Any]) -> dict[str, Any]:
        if on_assigned is not None and (_assigned(outcome) or _assigned(outcome.get("matching"))):
            on_assigned()
        return outcome

    def index_then_match() -> Any:
        if not watch.due():
            return {"skipped": "no new block"}
        watch.ran()
        report = index_chain(ctx=ctx, head=watch.seen)  # the head it just read: not asked for twice
        if report.get("events"):  # new posts: match now rather than at the next matching tick
            matched(run_matching_round(ctx=ctx))
        return report

    return [
        Periodic("index_chain", HEAD_POLL_S, index_then_match, lane=ASSIGN),
        Periodic("run_matching_round", s.matching_interval_s, lambda: matched(run_matching_round(ctx=ctx)),
                 lane=ASSIGN),
        Periodic("expire_heartbeats", s.heartbeat_interval_s, lambda: matched(expire_heartbeats(ctx=ctx))),
        Periodic("check_deadlines", s.deadline_interval_s, lambda: check_deadlines(ctx=ctx)),
        Periodic("settle_tasks", s.settle_interval_s, lambda: settle_tasks(ctx=ctx)),
        Periodic("post_canaries", s.canary_interval_s, lambda: post_canaries(ctx=ctx)),
    ]


class InProcessScheduler:
    """A daemon thread per lane that runs the lane's due jobs one after another."""

    def __init__(self, ctx: JobContext, jobs: list[Periodic] | None = None, *, tick_s: float = 0.2,
                 on_assigned: Callable[[], Any] | None = None) -> None:
        self.ctx = ctx
        self.jobs = jobs if jobs is not None else periodic_jobs(ctx, on_assigned=on_assigned)
        self.tick_s = tick_s
        self.runs: dict[str, int] = {job.name: 0 for job in self.jobs}
        self.errors: dict[str, int] = {job.name: 0 for job in self.jobs}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> InProcessScheduler:
        if not self._threads:
            for lane in sorted({job.lane for job in self.jobs}):
                thread = threading.Thread(target=self._loop, args=(lane,), name=f"hashgrid-{lane}",
                                          daemon=True)
                thread.start()
                self._threads.append(thread)
            log.info("in-process jobs started: %s", ", ".join(f"{j.name} ({j.lane})" for j in self.jobs))
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def __enter__(self) -> InProcessScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_due(self, lane: str | None = None) -> None:
        """Run every job (of `lane`) whose time has come (one pass; each lane's loop calls this)."""
        for job in self.jobs:
            if self._stop.is_set():
                return
            if lane is not None and job.lane != lane:
                continue
            now = time.monotonic()
            if now < job.next_at:
                continue
            job.next_at = now + job.interval_s
            try:
                job.run()
                self.runs[job.name] += 1
            except Exception:  # noqa: BLE001 - a job failure must not stop the others; it runs again
                self.errors[job.name] += 1
                log.exception("job %s failed; it runs again in %.1fs", job.name, job.interval_s)

    def _loop(self, lane: str) -> None:
        while not self._stop.is_set():
            self.run_due(lane)
            due = min(job.next_at for job in self.jobs if job.lane == lane)
            self._stop.wait(min(self.tick_s, max(0.0, due - time.monotonic())))


def start_background(settings: JobSettings | None = None, *, ctx: JobContext | None = None
                     ) -> InProcessScheduler | None:
    """Start the in-process scheduler unless Redis is configured (then Celery worker and beat run the jobs,
    and this returns None)."""
    settings = settings or (ctx.settings if ctx else JobSettings())
    if settings.redis_url:
        log.info("redis_url is set: background jobs run on Celery, not in-process")
        return None
    return InProcessScheduler(ctx or JobContext.from_settings(settings)).start()
