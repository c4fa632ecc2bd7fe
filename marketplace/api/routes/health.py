"""Liveness and readiness: the process answers and the database is reachable."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from marketplace.api.deps import SessionDep, SettingsDep
from marketplace.api.routing import Router

router = Router(tags=["health"])


@router.get("/health", summary="Liveness and database readiness")
def health(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    return {"status": "ok", "chain_id": settings.chain_id, "database": session.get_bind().dialect.name}
