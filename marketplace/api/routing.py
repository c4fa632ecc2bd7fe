"""`Router`: an APIRouter whose sync endpoints do all their database work in the one thread they run in.

A request's session would otherwise hold its connection from the first query in a dependency until FastAPI's
teardown, across the threadpool hops between (the dependency, the endpoint, the response validation FastAPI
runs in the threadpool for sync endpoints). Under a burst, every thread then waits for a connection held by
a request that is itself waiting for a thread: nothing moves until the pool times out (30 s, then a 500);
on SQLite, a POST's nonce insert also held the write lock across such a hop. So a sync endpoint here:

1. spends the request's nonce (left pending by `deps.current_wallet`) in its own transaction, committed at
   once for reads and together with the handler's writes otherwise (a refused request leaves nothing);
2. runs the handler;
3. commits what is still open on success, and closes the session either way, giving its connection back
   before the thread is released: what the endpoint returns is validated from loaded, detached objects.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import Response

from marketplace.api.bodies import StrictRequest
from marketplace.api.deps import current_wallet
from marketplace.api.security import spend_pending_nonce


@contextlib.contextmanager
def _unit_of_work(sessions: list[Session]) -> Iterator[None]:
    """Spend the pending nonce, let the body run, commit what is still open on success, and close either
    way: the connection is back in the pool before the thread is released."""
    try:
        for session in sessions:
            spend_pending_nonce(session)
        yield
        for session in sessions:
            if session.in_transaction():
                session.commit()
    finally:
        for session in sessions:
            session.close()


def in_one_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a sync endpoint as described above (signature kept: FastAPI reads it through __wrapped__)."""

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _unit_of_work([value for value in kwargs.values() if isinstance(value, Session)]):
            return endpoint(*args, **kwargs)

    return run


def spend_nonce_now(session: Session) -> None:
    """For async endpoints (run it in the threadpool): spend the pending nonce, commit, give the connection
    back. Such an endpoint must take the request's session (SessionDep) to call this."""
    with _unit_of_work([session]):
        pass


def spends_nonce(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an async endpoint that takes `CurrentWallet` as calling `spend_nonce_now` itself (required:
    without it the request's nonce would never be spent and the request could be replayed)."""
    endpoint.spends_nonce = True  # type: ignore[attr-defined]
    return endpoint


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


class SessionRoute(APIRoute):
    """A route whose sync endpoint runs as above and whose JSON body is parsed strictly (bodies.py)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictRequest(request.scope, request.receive))

        return strict

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        is_async = inspect.iscoroutinefunction(endpoint)
        marked = getattr(endpoint, "spends_nonce", False)
        if not is_async:
            endpoint = in_one_thread(endpoint)
        super().__init__(path, endpoint, **kwargs)
        if is_async and not marked and _depends_on(self.dependant, current_wallet):
            raise TypeError(
                f"async route {path} takes CurrentWallet: spend its nonce with spend_nonce_now and mark it "
                "@spends_nonce (or make it sync)"
            )


def Router(**kwargs: Any) -> APIRouter:  # noqa: N802 - reads as the class it builds
    """An APIRouter whose routes are `SessionRoute`s."""
    return APIRouter(route_class=SessionRoute, **kwargs)
