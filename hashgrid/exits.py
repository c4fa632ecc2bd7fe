"""One exit-code table for every `hashgrid` command, and the one place that turns an error into a line on
stderr and its code, so a script can tell "fix what you typed" from "retry later" whatever the command.

    0    done
    1    failed: understood but did not succeed (a revert, a task failed or cannot be placed, not
         found, not yours, not ready yet)
    2    bad input: fix the command line, the spec, a file, the config or the key (usage errors too)
    3    results disagree (`provider exec --repeat`)
    4    unavailable: the chain or the marketplace did not answer, or a transaction was not mined;
         retrying may help
    5    timed out waiting (`task wait`, `submit --wait`): the task goes on; `hashgrid task wait ID`
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import typer

from hashgrid.errors import (
    ChainError,
    ConfigError,
    ContentMissing,
    ContractRevert,
    DigestMismatch,
    ExecutionFailed,
    HashgridError,
    InvalidInput,
    MarketplaceError,
    OutputRejected,
    PolicyRefused,
    WaitTimeout,
)


class ExitCode(IntEnum):
    """The process exit status of every `hashgrid` command (see the module docstring's table)."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    DISAGREE = 3
    UNAVAILABLE = 4
    TIMED_OUT = 5
    INTERRUPTED = 130


# first match wins: subclasses before their bases
_BY_CLASS: tuple[tuple[type[HashgridError], ExitCode], ...] = (
    (ContentMissing, ExitCode.BAD_INPUT),
    (DigestMismatch, ExitCode.BAD_INPUT),
    (InvalidInput, ExitCode.BAD_INPUT),
    (ConfigError, ExitCode.BAD_INPUT),
    (PolicyRefused, ExitCode.BAD_INPUT),
    (ExecutionFailed, ExitCode.BAD_INPUT),  # it could not run as given (image missing, sandbox refused)
    (OutputRejected, ExitCode.BAD_INPUT),
    (WaitTimeout, ExitCode.TIMED_OUT),
    (ChainError, ExitCode.UNAVAILABLE),
    (MarketplaceError, ExitCode.UNAVAILABLE),
    (ContractRevert, ExitCode.FAILED),
)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The table's code for an error (anything unknown is a failure)."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, ValueError):  # settings validation (e.g. a dev key configured off the dev chain)
        return ExitCode.BAD_INPUT
    return ExitCode.FAILED


def error_line(exc: BaseException) -> str:
    """One line for a person: a revert in words (with its Solidity name), else the error's message."""
    if isinstance(exc, ContractRevert):
        from hashgrid.chain.reverts import in_words

        text = in_words(exc)
    elif isinstance(exc, HashgridError):
        text = exc.message
    else:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return " ".join(text.split())


def fail(exc: BaseException) -> typer.Exit:
    """Print `error: ...` on stderr and return the Exit to raise (`raise fail(exc) from None`)."""
    typer.echo(f"error: {error_line(exc)}", err=True)
    return typer.Exit(int(exit_code_for(exc)))


@contextmanager
def cli_errors() -> Iterator[None]:
    """A Hashgrid error (or a settings ValueError) becomes one line on stderr and the table's exit code."""
    try:
        yield
    except (HashgridError, ValueError) as exc:
        raise fail(exc) from None


def interrupted(message: str) -> typer.Exit:
    """Ctrl-C: say what was left as it was, exit 130."""
    sys.stderr.write(f"\ninterrupted: {message}\n")
    return typer.Exit(int(ExitCode.INTERRUPTED))
