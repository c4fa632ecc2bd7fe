"""The `hashgrid` command: a thin root that dispatches to each part's own Typer app.

Groups are named by module path and imported only when used, so `hashgrid provider ...` never pays for
importing the marketplace, and the core package keeps no static import of the parts it dispatches to.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

# group name -> ("module:attribute" of a typer.Typer, one-line help)
GROUPS: dict[str, tuple[str, str]] = {
    "chain": ("scripts.localnet:app", "Start or stop a local anvil chain."),
    "deploy": ("scripts.deploy:app", "Deploy the contracts and write the deployment file."),
    "dao": ("scripts.governance:app", "Governance: delegate, propose, vote, queue, execute, status, list."),
    "explorer": ("scripts.explorer:app", "Read tasks and providers from chain events."),
    "marketplace": ("marketplace.cli:app",
                    "Run the marketplace API and its background jobs: serve, migrate, reconcile."),
    "provider": ("provider.cli:app", "Sell this device's compute: init, stake, info, run, exec."),
    "demo": ("scripts.demo:app", "Play the on-chain life of a few tasks on a fresh local chain."),
    "task": ("hashgrid.customer_cli:task_app", "Customers: init, estimate, submit, list, wait, "
                                               "status, logs, result, invoice, cancel."),
    "wallet": ("hashgrid.customer_cli:wallet_app", "The customer's wallet: new, import, balance, claim."),
}

# root commands implemented elsewhere: name -> ("module:function", help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("scripts.up:up", "Run a live local network end to end: chain, marketplace, providers, tasks."),
    "down": ("scripts.up:down", "Stop what `hashgrid up` left running; --wipe removes its state folder."),
    "faucet": ("hashgrid.customer_cli:faucet", "Dev chain only: send GRID and ETH to an address."),
}


def _load(target: str) -> object:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"hashgrid {version('hashgrid')}")
        raise typer.Exit()


def _placeholder() -> None:
    """Stands in for a part in the root's help: never run (a named group or command is loaded for real)."""


def build_app(only: str | None = None, *, placeholders: bool = False) -> typer.Typer:
    """Build the root app; with `only`, import just that group (the common case of one invocation); with
    `placeholders`, import no part at all (the root's help, --version: listing the parts needs only their
    one-line help, and importing them all costs a second or more, web3 above all)."""
    app = typer.Typer(help="Hashgrid: an open compute marketplace.", no_args_is_help=True,
                      add_completion=True, pretty_exceptions_enable=False)

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                     help="print the installed version and exit"),
    ) -> None:
        """Hashgrid: an open compute marketplace."""  # a callback keeps one-command apps in group mode

    if placeholders:
        for name, (_, help_text) in GROUPS.items():
            app.add_typer(typer.Typer(), name=name, help=help_text)
        for name, (_, help_text) in COMMANDS.items():
            app.command(name=name, help=help_text)(_placeholder)
        return app
    for name, (target, help_text) in GROUPS.items():
        if only is not None and name != only:
            continue
        try:
            sub = _load(target)
        except ModuleNotFoundError as exc:
            if only is not None:
                raise
            _ = exc  # a part not built yet simply has no group
            continue
        app.add_typer(sub, name=name, help=help_text)  # type: ignore[arg-type]
    for name, (target, help_text) in COMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            function = _load(target)
        except ModuleNotFoundError:
            if only is not None:
                raise
            continue
        app.command(name=name, help=help_text)(function)  # type: ignore[arg-type,type-var]
    return app


# top-level modules of the optional installs (pyproject.toml) -> the install that brings them
EXTRA_OF_MODULE: dict[str, str] = {
    **dict.fromkeys(("docker", "wasmtime", "pynvml"), "provider"),
    **dict.fromkeys(("fastapi", "starlette", "sqlmodel", "sqlalchemy", "alembic", "uvicorn", "celery",
                     "redis", "psycopg", "solcx"), "server"),
}


def missing_install(exc: ModuleNotFoundError) -> str | None:
    """One line for a command that needs an install this machine lacks (None: a genuine bug, re-raised)."""
    extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
    if extra is None:
        return None
    return (f"error: this command needs the {extra} install (missing Python module {exc.name!r}): "
            f"pip install 'hashgrid[{extra}]'")


def _run(app: typer.Typer) -> None:
    """Run a group's app as typer's standalone mode would, except that Ctrl-C exits 130 (typer's "Aborted!"
    exits 1, which the exit-code table keeps for failures; see hashgrid/exits.py)."""
    from typer._click.exceptions import ClickException

    try:
        code = app(standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):  # typer turns KeyboardInterrupt (and EOF at a prompt) into Abort
        sys.stderr.write("\ninterrupted\n")
        raise SystemExit(130) from None
    except ClickException as exc:  # usage errors, shown as typer shows them: exit 2
        try:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)
        except ImportError:  # pragma: no cover - typer without rich
            exc.show()
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def main() -> None:
    """Entry point of the `hashgrid` console script."""
    first = sys.argv[1] if len(sys.argv) > 1 else None
    if first in GROUPS or first in COMMANDS:
        try:
            _run(build_app(first))
        except ModuleNotFoundError as exc:
            line = missing_install(exc)
            if line is None:
                raise
            print(line, file=sys.stderr)
            raise SystemExit(2) from None
    elif any(name.endswith("_COMPLETE") for name in os.environ):
        build_app()()  # shell completion walks every part's commands
    else:
        build_app(placeholders=True)()  # no part named: help, --version, or an unknown command's error


if __name__ == "__main__":
    main()
