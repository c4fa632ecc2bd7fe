"""The API's errors and the one place that turns every error into JSON {code, message, details}.

Each class says who failed and why with the values; `http_status` picks the status, so handlers only raise.
Bad input never becomes a 500: request validation errors are 422 with one readable line per problem.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

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
        409: "Conflict with the current state",
        413: "Too large",
        422: "Invalid input (one message per problem)",
        503: "Chain unavailable",
    }
    return {status: {"model": ErrorBody, "description": names.get(status, "Error")} for status in statuses}


def _json(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(status_code=status, content=jsonable_encoder(body))


async def hashgrid_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HashgridError)
    status = exc.http_status if 400 <= exc.http_status < 600 else 500
    return _json(status, exc.to_dict())


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "loc": ".".join(str(part) for part in error.get("loc", ())),
            "msg": str(error.get("msg", "")).removeprefix("Value error, "),
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


async def http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
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
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HashgridError, hashgrid_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
