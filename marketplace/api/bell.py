"""Wakes this process's long-polls when its in-process jobs have committed assignments, so a provider hears
of one at once instead of at its next re-check (the re-check stays: assignments made by another process,
a Celery worker or another uvicorn worker, ring no bell here)."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Bell:
    """Rung from any thread; awaited on event loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.rings = 0  # read it before looking for work, and pass it to `wait`: a ring in between counts

    def ring(self) -> None:
        with self._lock:
            self.rings += 1
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # a closed loop has no waiter left to wake
                loop.call_soon_threadsafe(_wake, future)

    async def wait(self, timeout: float, *, since: int) -> None:
        """Return after `timeout` seconds, or as soon as the bell rings; at once if it rang after `since`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self.rings != since:
                return
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(entry)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
