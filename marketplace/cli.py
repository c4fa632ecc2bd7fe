"""`hashgrid marketplace ...`: run the API server (uvicorn) and migrate its database."""

from __future__ import annotations

import typer

app = typer.Typer(help="The marketplace service: HTTP API, its database, reconciliation.",
                  no_args_is_help=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind"),
    port: int = typer.Option(8000, help="TCP port"),
    workers: int = typer.Option(1, help="uvicorn worker processes"),
    log_level: str = typer.Option("info"),
) -> None:
    """Serve the API (migrates the database to head first)."""
    from marketplace.api.server import serve as run
    from marketplace.api.server import server_config
    from marketplace.db import engine_from_settings, init_db
    from marketplace.settings import MarketplaceSettings

    settings = MarketplaceSettings()  # fails fast on a bad configuration
    engine = engine_from_settings(settings)
    init_db(engine)
    engine.dispose()
    run(
        server_config(
            "marketplace.api.app:app_from_env",
            settings,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )
    )


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    from marketplace.db import engine_from_settings, init_db
    from marketplace.settings import MarketplaceSettings

    init_db(engine_from_settings(MarketplaceSettings()))
    typer.echo("database at head")


@app.command()
def reconcile(
    json_output: bool = typer.Option(False, "--json", help="print the report as JSON"),
    block: int | None = typer.Option(None, help="compare as of this block (default: the indexer's cursor)"),
) -> None:
    """Compare the settlement journal, the database and the chain; print every difference. Exit 1 when
    there is one (0 when they agree; errors with the table of hashgrid.exits: 2 bad configuration, 4 the chain
    did not answer)."""
    import json

    from hashgrid.errors import HashgridError
    from marketplace.jobs.context import JobContext
    from marketplace.jobs.reconcile import reconcile_marketplace

    try:
        report = reconcile_marketplace(ctx=JobContext.from_settings(), block=block)
    except HashgridError as exc:
        from hashgrid.exits import fail

        raise fail(exc) from None
    if json_output:
        typer.echo(json.dumps({"block": report.block, "tasks_checked": report.tasks_checked,
                               "accounts_checked": report.accounts_checked, "ok": report.ok,
                               "differences": [d.to_dict() for d in report.differences]}, indent=2))
    else:
        typer.echo(f"block {report.block}: {report.tasks_checked} tasks and {report.accounts_checked} "
                   f"accounts checked, {len(report.differences)} difference(s)")
        for d in report.differences:
            typer.echo(f"{d.kind}: task {d.task_id} account {d.account}: expected {d.expected}, chain "
                       f"{d.actual} ({d.detail})")
    raise typer.Exit(0 if report.ok else 1)


def main() -> None:
    app()
