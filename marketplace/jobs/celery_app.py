"""The Celery app: broker and result back-end are Settings.redis_url, beat runs the periodic jobs, and each
task wraps a plain job function, retrying only errors whose `retryable` is true (RPC down, tx timeout).

Start a worker: `celery -A marketplace.jobs.celery_app worker -Q hashgrid` and beat:
`celery -A marketplace.jobs.celery_app beat`. The job context (engine, chain client, deployment) is built
once per worker process from the environment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from hashgrid.errors import HashgridError
from marketplace.jobs.context import JobContext, JobSettings

log = logging.getLogger(__name__)

QUEUE = "hashgrid"
MAX_RETRIES = 5

_settings = JobSettings()
celery_app = Celery("hashgrid", broker=_settings.redis_url or "memory://",
                    backend=_settings.redis_url or "cache+memory://")
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,  # a worker that dies mid-job leaves the message for another (jobs are idempotent)
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    beat_schedule={
        # a beat message not taken within its interval is dropped: the next one does the same work
        name: {"task": f"hashgrid.{job}", "schedule": interval, "options": {"expires": max(interval, 1.0)}}
        for name, job, interval in (
            ("index-chain", "index_chain", _settings.index_interval_s),
            ("matching-round", "run_matching_round", _settings.matching_interval_s),
            ("expire-heartbeats", "expire_heartbeats", _settings.heartbeat_interval_s),
            ("check-deadlines", "check_deadlines", _settings.deadline_interval_s),
            ("settle-tasks", "settle_tasks", _settings.settle_interval_s),
            ("post-canaries", "post_canaries", _settings.canary_interval_s),
            ("reconcile", "reconcile", _settings.reconcile_interval_s),
        )
    },
)
app = celery_app  # `celery -A marketplace.jobs.celery_app` finds `app` or `celery`

_ctx: JobContext | None = None
_ctx_lock = threading.Lock()


def context() -> JobContext:
    """This worker process's job context, built on first use."""
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            _ctx = JobContext.from_settings(JobSettings())
        return _ctx


def _run(task: Task, job: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Run a job; retry (with backoff) only a HashgridError that says a retry can help."""
    try:
        return job(ctx=context(), **kwargs)
    except HashgridError as exc:
        if exc.retryable and task.request.retries < MAX_RETRIES:
            log.warning("%s failed (%s), retrying", task.name, exc.code)
            raise task.retry(exc=exc, countdown=min(2 ** task.request.retries, 30)) from exc
        raise


@celery_app.task(name="hashgrid.index_chain", bind=True)
def index_chain_task(
    self: Task, max_batches: int | None = None, match_after: bool = True
) -> dict[str, Any]:
    """Index; when new events arrived, queue a matching round at once (its task id is in the result)."""
    from marketplace.jobs.jobs import index_chain

    report = _run(self, index_chain, max_batches=max_batches)
    if match_after and report.get("events"):
        report["matching_task_id"] = run_matching_round_task.delay().id
    return report


@celery_app.task(name="hashgrid.run_matching_round", bind=True)
def run_matching_round_task(self: Task, task_ids: list[int] | None = None) -> dict[str, Any]:
    from marketplace.jobs.jobs import run_matching_round

    return _run(self, run_matching_round, task_ids=task_ids)


@celery_app.task(name="hashgrid.expire_heartbeats", bind=True)
def expire_heartbeats_task(self: Task) -> dict[str, Any]:
    from marketplace.jobs.jobs import expire_heartbeats

    return _run(self, expire_heartbeats)


@celery_app.task(name="hashgrid.check_deadlines", bind=True)
def check_deadlines_task(self: Task) -> dict[str, Any]:
    from marketplace.jobs.jobs import check_deadlines

    return _run(self, check_deadlines)


@celery_app.task(name="hashgrid.settle_tasks", bind=True)
def settle_tasks_task(self: Task) -> dict[str, Any]:
    from marketplace.jobs.settle import settle_tasks

    return _run(self, settle_tasks)


@celery_app.task(name="hashgrid.post_canaries", bind=True)
def post_canaries_task(self: Task) -> dict[str, Any]:
    from marketplace.jobs.canary import post_canaries

    return _run(self, post_canaries)


@celery_app.task(name="hashgrid.reconcile", bind=True)
def reconcile_task(self: Task) -> dict[str, Any]:
    from marketplace.jobs.reconcile import reconcile_job

    return _run(self, reconcile_job)
