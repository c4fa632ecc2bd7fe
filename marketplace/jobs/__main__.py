"""`python -m marketplace.jobs run | once <job> | rebuild`: run the background jobs in this process (the
embedded default when no Redis is configured), one job once, or rebuild the database from the chain."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading

import typer

app = typer.Typer(help="Hashgrid background jobs (in-process runner).", no_args_is_help=True)
JOBS = ("index_chain", "run_matching_round", "expire_heartbeats", "check_deadlines", "settle_tasks",
        "post_canaries", "reconcile_job")


@app.command()
def run(log_level: str = typer.Option("INFO")) -> None:
    """Run every periodic job in this process until SIGINT/SIGTERM."""
    from marketplace.jobs.context import JobContext
    from marketplace.jobs.scheduler import InProcessScheduler

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with InProcessScheduler(JobContext.from_settings()), contextlib.suppress(KeyboardInterrupt):
        stop.wait()


@app.command()
def once(job: str = typer.Argument(..., help=" | ".join(JOBS))) -> None:
    """Run one job once and print its result as JSON."""
    from marketplace.jobs import canary, jobs, reconcile, settle
    from marketplace.jobs.context import JobContext

    if job not in JOBS:
        raise typer.BadParameter(f"unknown job {job!r}; expected one of {', '.join(JOBS)}")
    module = {"settle_tasks": settle, "post_canaries": canary, "reconcile_job": reconcile}.get(job, jobs)
    result = getattr(module, job)(ctx=JobContext.from_settings())
    typer.echo(json.dumps(result, default=str))


@app.command()
def rebuild(
    from_block: int | None = typer.Option(None, help="default: the deployment's start block"),
) -> None:
    """Drop the chain-derived rows and index them again from the chain alone."""
    from sqlmodel import Session

    from marketplace.jobs.context import JobContext

    ctx = JobContext.from_settings()
    with Session(ctx.engine) as session:
        report = ctx.indexer.rebuild(session, from_block=from_block)
    typer.echo(json.dumps(report.as_dict()))


if __name__ == "__main__":
    app()
