"""The in-process runner, used when no Redis URL is configured (the embedded default for `make up`): one
background thread runs each job at its interval. Jobs are the same functions Celery runs; a failure is
logged and the job simply runs again at its next tick (every job is idempotent)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marketplace.jobs.context import JobContext, JobSettings

log = logging.getLogger(__name__)


@dataclass
class Periodic:
    name: str
    interval_s: float
    run: Callable[[], Any]
    next_at: float = 0.0


def periodic_jobs(ctx: JobContext) -> list[Periodic]:
    """The jobs and their intervals from the settings (the same schedule Celery beat uses)."""
    from marketplace.jobs.canary import post_canaries
    from marketplace.jobs.jobs import check_deadlines, expire_heartbeats, index_chain, run_matching_round
    from marketplace.jobs.settle import settle_tasks

    s = ctx.settings

    def index_then_match() -> Any:
        report = index_chain(ctx=ctx)
        if report.get("events"):  # new posts: match now rather than at the next matching tick
            run_matching_round(ctx=ctx)
        return report

    return [
        Periodic("index_chain", s.index_interval_s, index_then_match),
        Periodic("run_matching_round", s.matching_interval_s, lambda: run_matching_round(ctx=ctx)),
        Periodic("expire_heartbeats", s.heartbeat_interval_s, lambda: expire_heartbeats(ctx=ctx)),
        Periodic("check_deadlines", s.deadline_interval_s, lambda: check_deadlines(ctx=ctx)),
        Periodic("settle_tasks", s.settle_interval_s, lambda: settle_tasks(ctx=ctx)),
        Periodic("post_canaries", s.canary_interval_s, lambda: post_canaries(ctx=ctx)),
    ]


class InProcessScheduler:
    """A daemon thread that runs due jobs one after another (so they never race each other in-process)."""

    def __init__(self, ctx: JobContext, jobs: list[Periodic] | None = None, *, tick_s: float = 0.2) -> None:
        self.ctx = ctx
        self.jobs = jobs if jobs is not None else periodic_jobs(ctx)
        self.tick_s = tick_s
        self.runs: dict[str, int] = {job.name: 0 for job in self.jobs}
        self.errors: dict[str, int] = {job.name: 0 for job in self.jobs}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> InProcessScheduler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hashgrid-jobs", daemon=True)
            self._thread.start()
            log.info("in-process jobs started: %s", ", ".join(j.name for j in self.jobs))
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> InProcessScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_due(self) -> None:
        """Run every job whose time has come (one pass; the loop calls this each tick)."""
        for job in self.jobs:
            if self._stop.is_set():
                return
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

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            self._stop.wait(self.tick_s)


def start_background(settings: JobSettings | None = None, *, ctx: JobContext | None = None
                     ) -> InProcessScheduler | None:
    """Start the in-process scheduler unless Redis is configured (then Celery worker and beat run the jobs,
    and this returns None)."""
    settings = settings or (ctx.settings if ctx else JobSettings())
    if settings.redis_url:
        log.info("redis_url is set: background jobs run on Celery, not in-process")
        return None
    return InProcessScheduler(ctx or JobContext.from_settings(settings)).start()
