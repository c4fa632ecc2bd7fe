"""Strict JSON for request bodies: one parser for every route, so no input reaches a handler that the standard
parser would take differently from another (duplicate keys), that a later step cannot handle (lone surrogates,
NaN, 5,000-digit integers) or that exhausts the stack (deep nesting).

Errors are `json.JSONDecodeError`s: FastAPI turns those into a 422 `request_invalid`, and so does
`json_object_body` (POST /tasks).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from starlette.requests import Request

MAX_DEPTH = 32  # arrays and objects inside each other; a task spec needs 4
MAX_INT_DIGITS = 80  # uint256 has 78 decimal digits


class BodyInvalid(json.JSONDecodeError):
    """A body that is not strict JSON; `msg` says why."""

    def __init__(self, reason: str, doc: str = "", pos: int = 0) -> None:
        super().__init__(reason, doc, pos)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise BodyInvalid(f"duplicate key {duplicate[:64]!r} in a JSON object")
    return document


def _integer(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:
        raise BodyInvalid(f"integer of {len(text)} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(text)


def _number(text: str) -> float | int:
    """A number with a fraction or exponent; an integral one ('2.0', '1e3') is the integer it denotes, exactly
    (JSON Schema counts it as an integer), if it has at most MAX_INT_DIGITS digits."""
    exact = Decimal(text)
    if exact == exact.to_integral_value() and exact.adjusted() < MAX_INT_DIGITS:
        return int(exact)
    value = float(text)
    if not math.isfinite(value):
        raise BodyInvalid(f"number {text[:32]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise BodyInvalid(f"{name} is not JSON")


def _check_tree(document: Any) -> None:
    """Depth and string checks, iteratively (the tree may be deeper than the stack allows)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError:
                    raise BodyInvalid("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
            continue
        if isinstance(node, dict):
            children: Any = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            raise BodyInvalid(f"JSON nested more than {MAX_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children)


def parse_json(body: bytes) -> Any:
    """The document in `body` (UTF-8 JSON, RFC 8259), or BodyInvalid saying what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyInvalid(f"body is not UTF-8 (byte {exc.start})", pos=exc.start) from None
    try:
        document = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_float=_number,
            parse_constant=_constant,
        )
    except BodyInvalid:
        raise
    except json.JSONDecodeError as exc:
        raise BodyInvalid(exc.msg, pos=exc.pos) from None
    except RecursionError:
        raise BodyInvalid(f"JSON nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # e.g. an integer past Python's digit limit in a float's exponent
        raise BodyInvalid(str(exc)[:200]) from None
    _check_tree(document)
    return document


class StrictRequest(Request):
    """A Request whose `json()` is `parse_json` (what FastAPI calls to parse a JSON body)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` or `application/<x>+json`, parameters ignored; a missing header counts as JSON."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
