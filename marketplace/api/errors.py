"""The API's errors and the one place that turns every error into JSON {code, message, details}.

Each class says who failed and why with the values; `http_status` picks the status, so handlers only raise.
Bad input never becomes a 500: request validation errors are 422 with one readable line per problem.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from hashgrid.errors import HashgridError


class ErrorBody(BaseModel):
    """Every error response."""

    code: str
    message: str
    component: str = "marketplace"
    retryable: bool = False
    details: dict[str, Any] = {}


class Unauthorized(HashgridError):
    """No valid signature or token: the caller is not known."""

    code = "unauthorized"
    component = "auth"
    http_status = 401


class SignatureExpired(Unauthorized):
    code = "signature_expired"


class WrongChain(Unauthorized):
    code = "wrong_chain"


class NonceReused(Unauthorized):
    """A signed request or login whose nonce was already spent: a replay."""

    code = "nonce_reused"


class Forbidden(HashgridError):
    code = "forbidden"
    component = "marketplace"
    http_status = 403


class NotYourTask(Forbidden):
    code = "not_your_task"


class NotAssigned(Forbidden):
    """A provider reported for a task it holds no replica of."""

    code = "not_assigned"


class StakeTooLow(Forbidden):
    code = "provider_stake_too_low"


class NotRegistered(HashgridError):
    code = "provider_not_registered"
    component = "marketplace"
    http_status = 404


class ResultNotReady(HashgridError):
    code = "result_not_ready"
    component = "marketplace"
    http_status = 409


class PayloadTooLarge(HashgridError):
    code = "payload_too_large"
    component = "content"
    http_status = 413


class BodyTimeout(HashgridError):
    """A request body stopped arriving (guard.py): the connection is closed."""

    code = "request_timeout"
    component = "marketplace"
    http_status = 408


class RateLimited(HashgridError):
    """Too many requests from one address or wallet; `Retry-After` says when to come back."""

    code = "rate_limited"
    component = "marketplace"
    retryable = True
    http_status = 429
    retry_after_s: float | None = None


class BadDigest(HashgridError):
    """The uploaded bytes do not hash to the sha256 in the URL: nothing is stored."""

    code = "digest_mismatch"
    component = "content"
    http_status = 400


class BadRequest(HashgridError):
    code = "bad_request"
    component = "marketplace"
    http_status = 400


# the statuses each route may answer with an ErrorBody, for the OpenAPI document
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    names = {
        400: "Malformed request",
        401: "Not signed, expired, replayed or wrong chain",
        403: "Signed by the wrong wallet",
        404: "Not found",
        405: "Method not allowed (the Allow header lists the path's methods)",
        408: "The request body stalled",
        409: "Conflict with the current state",
        413: "Body over this route's cap",
        422: "Invalid input (one message per problem)",
        429: "Rate limited: retry after the Retry-After header's seconds",
        503: "Chain unavailable",
    }
    return {status: {"model": ErrorBody, "description": names.get(status, "Error")} for status in statuses}


def _json(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(status_code=status, content=jsonable_encoder(body))


async def hashgrid_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HashgridError)
    status = exc.http_status if 400 <= exc.http_status < 600 else 500
    response = _json(status, exc.to_dict())
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    reason = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid" and reason:
        message = f"{message}: {reason}"
    return message


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in getattr(request.app.state, "method_routes", None) or request.app.routes:
        match, _ = route.matches({**request.scope, "method": "\0"})
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "loc": ".".join(str(part) for part in error.get("loc", ())),
            "msg": _message(error),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    message = "; ".join(f"{p['loc']}: {p['msg']}" for p in problems) or "invalid request"
    return _json(
        422,
        {
            "code": "request_invalid",
            "component": "marketplace",
            "message": message,
            "retryable": False,
            "details": {"errors": problems},
        },
    )


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI could not read the body (the guard answers for its own refusals)
        cause = exc.__cause__
        return await validation_error_handler(
            request,
            RequestValidationError(
                [{"type": "body_unreadable", "loc": ("body",), "msg": f"unreadable body: {cause!r}"[:300]}]
            ),
        )
    response = _json(
        exc.status_code,
        {
            "code": f"http_{exc.status_code}",
            "component": "marketplace",
            "message": str(exc.detail),
            "retryable": False,
            "details": {},
        },
    )
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HashgridError, hashgrid_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
