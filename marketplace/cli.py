"""`hashgrid marketplace ...`: run the API server (uvicorn) and migrate its database."""

from __future__ import annotations

import typer

app = typer.Typer(help="The marketplace service: HTTP API and its database.", no_args_is_help=True)


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


def main() -> None:
    app()
