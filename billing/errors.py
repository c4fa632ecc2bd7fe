"""Billing's own error classes, in the shape of hashgrid.errors (code, component, retryable), so the
marketplace's one exception handler and Celery's retry rule treat them like the core's.

NOTE: the style guide keeps every error class in hashgrid/errors.py; these live here until the lead moves
them (billing may not edit the core).
"""

from __future__ import annotations

from typing import Any

from hashgrid.errors import HashgridError, InvalidInput


class PriceInvalid(InvalidInput):
    """A price sheet or usage quantity is not a non-negative integer amount (floats are refused for money)."""

    code = "price_invalid"
    component = "billing"


class UsageReportInvalid(InvalidInput):
    """A signed usage report was refused: malformed, signed by someone else, or for another task or result.

    `reason` is one short machine-friendly phrase (bad_signature, wrong_signer, wrong_task, wrong_provider,
    wrong_result, malformed)."""

    code = "usage_report_invalid"
    component = "billing"

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(f"usage report refused ({reason}): {message}", reason=reason, **details)
        self.reason = reason


class SettlementError(HashgridError):
    """A settlement could not be planned (e.g. the plan pays a replica the chain says did not agree)."""

    code = "settlement_error"
    component = "billing"
    http_status = 409
