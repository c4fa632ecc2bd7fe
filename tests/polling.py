"""The one way tests wait for another process or thread: poll a condition under a deadline (never a bare
sleep as synchronisation), failing with what was awaited and, if given, a diagnosis (say, process logs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1,
             diagnose: Callable[[], str] | None = None) -> Any:
    """Poll `condition` until it returns something truthy (returned); AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f"\n{diagnose()}" if diagnose else ""))
        time.sleep(interval)
