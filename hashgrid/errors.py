"""One exception class per problem, each with a code, the component that raised it and whether a retry
can help.

Services map `code` to an HTTP status in one place; Celery jobs retry only what is `retryable`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HashgridError(Exception):
    """Base of every Hashgrid error: `code` is stable and machine-readable, the message is for people."""

    code: ClassVar[str] = "hashgrid_error"
    component: ClassVar[str] = "core"
    retryable: ClassVar[bool] = False
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "component": self.component, "message": self.message,
                "retryable": self.retryable, "details": self.details}


class ConfigError(HashgridError):
    code = "config_invalid"
    http_status = 500


class InvalidInput(HashgridError):
    """Something a caller gave is malformed or out of range."""

    code = "invalid_input"
    http_status = 422


class NotFound(HashgridError):
    code = "not_found"
    http_status = 404


class ChainError(HashgridError):
    """The chain could not be reached or a transaction did not land: retrying may help."""

    code = "chain_unavailable"
    component = "chain"
    retryable = True
    http_status = 503


class TransactionTimeout(ChainError):
    code = "transaction_timeout"


class ContractRevert(HashgridError):
    """A contract call reverted. Subclasses are made per custom error (see hashgrid.chain.reverts).

    `error_name` is the Solidity error (e.g. EscrowRevealMismatch) and `args` its decoded values.
    """

    code = "contract_revert"
    component = "chain"
    http_status = 409

    def __init__(self, message: str, *, error_name: str = "", args: dict[str, Any] | None = None) -> None:
        super().__init__(message, error_name=error_name, args=args or {})
        self.error_name = error_name
        self.error_args = args or {}


# ---------------------------------------------------------------- specs, content and provider policy


class SpecInvalid(InvalidInput):
    """A task spec is malformed or out of bounds; `errors` lists each problem as {loc, msg}."""

    code = "spec_invalid"
    component = "spec"


class DigestMismatch(HashgridError):
    """A blob's sha256 is not the one it was asked for: it is refused, never used."""

    code = "digest_mismatch"
    component = "content"
    http_status = 422

    def __init__(self, what: str, *, expected: str, actual: str) -> None:
        super().__init__(f"{what}: sha256 mismatch, expected {expected}, got {actual}",
                         what=what, expected=expected, actual=actual)
        self.expected = expected
        self.actual = actual


class ContentMissing(NotFound):
    """A blob named by sha256 is in none of the places searched."""

    code = "content_missing"
    component = "content"


class PolicyRefused(HashgridError):
    """The provider's policy refuses a task before anything runs; `reason` goes back to the marketplace."""

    code = "policy_refused"
    component = "provider"
    http_status = 403

    def __init__(self, reason: str, **details: object) -> None:
        super().__init__(f"refused by provider policy: {reason}", reason=reason, **details)
        self.reason = reason


class ExecutionFailed(HashgridError):
    """A task could not run at all (no runtime, missing image, sandbox error), unlike a non-zero exit."""

    code = "execution_failed"
    component = "provider"
    http_status = 500


class OutputRejected(HashgridError):
    """A task's declared outputs cannot be hashed safely (a symlink, a device, a non-UTF-8 name)."""

    code = "output_rejected"
    component = "provider"
    http_status = 422


# ---------------------------------------------------------------- customer client


class Forbidden(HashgridError):
    """The signed wallet may not see or act on this (e.g. another customer's task)."""

    code = "forbidden"
    component = "client"
    http_status = 403


class NotReady(HashgridError):
    """What was asked for does not exist yet (a result before settlement, an invoice of an open task)."""

    code = "not_ready"
    component = "client"
    http_status = 409


class MarketplaceError(HashgridError):
    """The marketplace could not be reached or failed (5xx): retrying may help."""

    code = "marketplace_unavailable"
    component = "client"
    retryable = True
    http_status = 503


class WaitTimeout(HashgridError):
    """A task did not reach a final state within the time given."""

    code = "wait_timeout"
    component = "client"
    retryable = True
    http_status = 504


class TaskUnplaceable(HashgridError):
    """A task stays posted because nothing can place it as things stand (not merely busy providers)."""

    code = "task_unplaceable"
    component = "client"
    http_status = 409
