"""Background work: the chain indexer, matching rounds, heartbeat expiry and deadlines, as plain functions,
run by Celery workers (Settings.redis_url set) or by an in-process scheduler thread (the embedded default)."""

from marketplace.jobs.context import JobContext, JobSettings
from marketplace.jobs.jobs import check_deadlines, expire_heartbeats, index_chain, run_matching_round
from marketplace.jobs.scheduler import InProcessScheduler, start_background

__all__ = [
    "InProcessScheduler", "JobContext", "JobSettings", "check_deadlines", "expire_heartbeats", "index_chain",
    "run_matching_round", "start_background",
]
