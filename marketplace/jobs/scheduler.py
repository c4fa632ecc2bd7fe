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
from dataclasses import dataclass, field
from typing import Any

from marketplace.jobs.context import JobContext, JobSettings

log = logging.getLogger(__name__)


HEAD_POLL_S = 0.05  # while the chain is busy the assign lane asks for its head this often (eth_blockNumber)
IDLE_HEAD_POLL_S = 1.0  # ... and this often at rest (decision 14: a network at rest costs almost nothing)
BUSY_WINDOW_S = 10.0  # busy: a new block, or a post announced by the API, within this many seconds
IDLE_BACKOFF_S = 8.0  # matching and settlement passes that find nothing to do back off (doubling) to this
ASSIGN, JOBS = "assign", "jobs"


@dataclass
class Periodic:
    name: str
    interval_s: float
    run: Callable[[], Any]
    next_at: float = 0.0
    lane: str = JOBS
    idle_max_s: float | None = None  # set: a pass that found nothing to do doubles the interval up to this
    base_s: float = field(init=False)
    waker: threading.Event | None = None  # its lane's sleep (set by the scheduler that runs it)

    def __post_init__(self) -> None:
        self.base_s = self.interval_s

    def worked(self, busy: bool) -> None:
        """Back off after an idle pass; a busy one restores the base interval."""
        if self.idle_max_s is not None:
            self.interval_s = self.base_s if busy else min(self.interval_s * 2, self.idle_max_s)

    def wake(self) -> None:
        """Run now, with the base interval (the chain showed new events, or a post is coming)."""
        self.interval_s, self.next_at = self.base_s, 0.0
        if self.waker is not None:
            self.waker.set()


class Nudge(threading.Event):
    """The API's word that a post is coming (set when a spec is registered): an Event the head watch reads,
    which also wakes the assign lane at once, so that lane can sleep through a quiet second."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Callable[[], object]] = []

    def set(self) -> None:
        super().set()
        for listener in list(self.listeners):
            listener()


class HeadWatch:
    """Index when the chain head moved: a post is indexed within HEAD_POLL_S of its block while the chain is
    busy, and within IDLE_HEAD_POLL_S at rest. Busy means a new block or an expected post (`expect`, set by
    the API when it registers a spec: the customer's postTask follows) within BUSY_WINDOW_S. A poll that finds
    the same head costs one RPC and no database; an unreachable chain is left to index_chain to report, at
    `interval_s` (not at every poll)."""

    def __init__(self, ctx: JobContext, interval_s: float, expect: threading.Event | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx, self.interval_s, self.clock = ctx, interval_s, clock
        self.expect = expect or threading.Event()
        self.head: int | None = None  # the head when the last index run began
        self.seen: int | None = None
        self.ran_at = float("-inf")
        self.failed = False  # the last index run raised: the same head is indexed again after interval_s
        self.polled_at = float("-inf")
        self.busy_until = float("-inf")
        self.polls = 0  # RPCs made (tests and bench.idle read it)

    def busy(self, now: float) -> bool:
        if self.expect.is_set():
            self.expect.clear()
            self.busy_until = now + BUSY_WINDOW_S
        return now < self.busy_until

    def due(self) -> bool:
        """True when an index run may find something."""
        now = self.clock()
        if now - self.polled_at < (HEAD_POLL_S if self.busy(now) else IDLE_HEAD_POLL_S):
            return False
        self.polled_at = now
        self.polls += 1
        try:
            self.seen = self.ctx.client.block_number()
        except Exception:  # noqa: BLE001 - web3 raises connection errors of several types
            self.seen = None
        if self.seen is not None and self.seen != self.head:
            self.busy_until = now + BUSY_WINDOW_S
            return True
        # the same head: nothing new unless the last run failed; an unreachable chain is left to
        # index_chain to report
        return (self.seen is None or self.failed) and now - self.ran_at >= self.interval_s

    def ran(self, *, failed: bool = False) -> None:
        self.head, self.ran_at, self.failed = self.seen, self.clock(), failed


def _assigned(outcome: dict[str, Any] | None) -> bool:
    return bool(outcome and outcome.get("assigned"))


def periodic_jobs(ctx: JobContext, *, on_assigned: Callable[[], Any] | None = None,
                  expect_post: threading.Event | None = None) -> list[Periodic]:
    """The jobs and their intervals from the settings (the same schedule Celery beat uses). `on_assigned`
    is called after a matching round sent assignments (the API wakes its long-polls with it); `expect_post`
    is set by the API when a post is coming (the head watch polls fast again)."""
    from marketplace.jobs.canary import post_canaries
    from marketplace.jobs.jobs import check_deadlines, expire_heartbeats, index_chain, run_matching_round
    from marketplace.jobs.reconcile import reconcile_job
    from marketplace.jobs.settle import settle_tasks

    s = ctx.settings
    watch = HeadWatch(ctx, s.index_interval_s, expect_post)

    def matched(outcome: dict[str, Any]) -> dict[str, Any]:
        if on_assigned is not None and (_assigned(outcome) or _assigned(outcome.get("matching"))):
            on_assigned()
        return outcome

    def index_then_match() -> Any:
        due = watch.due()
        # at rest the lane sleeps between polls (a Nudge or a new block makes it busy again)
        indexing.interval_s = HEAD_POLL_S if watch.busy(watch.clock()) else IDLE_HEAD_POLL_S
        if not due:
            return {"skipped": "no new block"}
        watch.ran()
        try:
            report = index_chain(ctx=ctx, head=watch.seen)  # the head it just read: not asked for twice
        except Exception:
            watch.ran(failed=True)  # the same head is indexed again after the index interval
            raise
        if report.get("events"):  # new posts: match now rather than at the next matching tick
            matched(run_matching_round(ctx=ctx))
            matching.wake()
            settling.wake()  # commits and reveals: settlement may be due
        return report

    def match_round() -> Any:
        outcome = matched(run_matching_round(ctx=ctx))
        matching.worked(_assigned(outcome))  # a queue nobody can serve is retried less often
        return outcome

    def settle_round() -> Any:
        outcome = settle_tasks(ctx=ctx)
        settling.worked(not outcome.get("idle"))
        return outcome

    matching = Periodic("run_matching_round", s.matching_interval_s, match_round, lane=ASSIGN,
                        idle_max_s=IDLE_BACKOFF_S)
    settling = Periodic("settle_tasks", s.settle_interval_s, settle_round, idle_max_s=IDLE_BACKOFF_S)
    indexing = Periodic("index_chain", HEAD_POLL_S, index_then_match, lane=ASSIGN)
    if isinstance(expect_post, Nudge):
        expect_post.listeners.append(indexing.wake)
    return [
        indexing,
        matching,
        Periodic("expire_heartbeats", s.heartbeat_interval_s, lambda: matched(expire_heartbeats(ctx=ctx))),
        Periodic("check_deadlines", s.deadline_interval_s, lambda: check_deadlines(ctx=ctx)),
        settling,
        Periodic("post_canaries", s.canary_interval_s, lambda: post_canaries(ctx=ctx)),
        # first pass one interval after start: a restart must not reconcile before the indexer caught up
        Periodic("reconcile", s.reconcile_interval_s, lambda: reconcile_job(ctx=ctx),
                 next_at=time.monotonic() + s.reconcile_interval_s),
    ]


class InProcessScheduler:
    """A daemon thread per lane that runs the lane's due jobs one after another."""

    def __init__(self, ctx: JobContext, jobs: list[Periodic] | None = None, *, tick_s: float = 1.0,
                 on_assigned: Callable[[], Any] | None = None,
                 expect_post: threading.Event | None = None) -> None:
        self.ctx = ctx
        self.jobs = jobs if jobs is not None else periodic_jobs(ctx, on_assigned=on_assigned,
                                                                expect_post=expect_post)
        self.tick_s = tick_s
        self.runs: dict[str, int] = {job.name: 0 for job in self.jobs}
        self.errors: dict[str, int] = {job.name: 0 for job in self.jobs}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._wakers = {lane: threading.Event() for lane in {job.lane for job in self.jobs}}
        for job in self.jobs:
            job.waker = self._wakers[job.lane]

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
        for waker in self._wakers.values():
            waker.set()
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
        waker = self._wakers[lane]
        while not self._stop.is_set():
            self.run_due(lane)
            due = min(job.next_at for job in self.jobs if job.lane == lane)
            # sleeps until the next job is due, a tick at most, or until a job of the lane is woken
            if waker.wait(min(self.tick_s, max(0.0, due - time.monotonic()))):
                waker.clear()


def start_background(settings: JobSettings | None = None, *, ctx: JobContext | None = None
                     ) -> InProcessScheduler | None:
    """Start the in-process scheduler unless Redis is configured (then Celery worker and beat run the jobs,
    and this returns None)."""
    settings = settings or (ctx.settings if ctx else JobSettings())
    if settings.redis_url:
        log.info("redis_url is set: background jobs run on Celery, not in-process")
        return None
    return InProcessScheduler(ctx or JobContext.from_settings(settings)).start()
