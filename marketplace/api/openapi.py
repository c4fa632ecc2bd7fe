"""The OpenAPI document, completed where FastAPI cannot see: the security schemes, the task spec schema of
POST /tasks (served as a plain route), and the statuses the guard answers for every route (408, 413, 429)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from marketplace.api.errors import error_responses
from marketplace.api.guard import BODYLESS, Limits, rule_for
from marketplace.api.spec_schema import spec_schema

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "a token from POST /auth/siwe"},
    "eip712": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Hashgrid-Signature",
        "description": "EIP-712 signature of the request, with X-Hashgrid-Address, X-Hashgrid-Nonce, "
        "X-Hashgrid-Expiry (and X-Hashgrid-Chain-Id); docs/api.md",
    },
}
SIGNED: list[dict[str, list[str]]] = [{"bearer": []}, {"eip712": []}]


def _error_refs(statuses: list[int]) -> dict[str, Any]:
    responses = error_responses(*statuses)
    return {
        str(status): {
            "description": spec["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for status, spec in responses.items()
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    limits: Limits = app.state.limits
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    if "ErrorBody" not in schemas:
        from marketplace.api.errors import ErrorBody

        schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    spec, definitions = spec_schema()
    schemas.update(definitions)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            statuses = []
            if method.upper() not in BODYLESS:
                statuses += [408, 413]
            rule, _ = rule_for(limits, method.upper(), path)
            if rule is not None or method.upper() not in BODYLESS:
                statuses.append(429)
            for status, response in _error_refs(statuses).items():
                responses.setdefault(status, response)
            if "401" in responses:
                operation["security"] = SIGNED
            if path == "/tasks" and method == "post":
                content = operation["requestBody"]["content"]["application/json"]
                content["schema"] = spec
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
