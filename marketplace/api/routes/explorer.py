"""The public explorer: tasks, a task's history, providers with rewards and slashes, network stats; read
only and unauthenticated, served from what the chain indexer stored, and showing what the chain shows: no
replica's reported hash, usage, outputs or progress (services/visibility.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query

from marketplace.api.deps import SessionDep, SettingsDep, StakeOracleDep
from marketplace.api.errors import error_responses
from marketplace.api.routing import Router
from marketplace.api.schemas import ADDRESS_PATTERN, MAX_JSON_INT
from marketplace.api.services import explorer as service
from marketplace.api.services.providers import is_eligible, is_online, min_stake_or_none
from marketplace.api.services.visibility import public_replica, public_task, revealed_hashes
from marketplace.models import (
    ChainEventPublic,
    ProviderPublic,
    ProvidersPublic,
    TasksPublic,
    TaskStatus,
)

router = Router(prefix="/explorer", tags=["explorer"])
Offset = Annotated[int, Query(ge=0, le=2**31)]
Limit = Annotated[int, Query(ge=1, le=500)]


@router.get("/tasks", response_model=TasksPublic, summary="Tasks seen on chain")
def tasks(
    session: SessionDep,
    status: TaskStatus | None = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> TasksPublic:
    """`running` is a provider's report, not a chain state: the public sees such tasks as `assigned`, and a
    filter on either lists both."""
    rows, count = service.list_tasks(session=session, status=status, offset=offset, limit=limit)
    return TasksPublic(data=[public_task(row) for row in rows], count=count)


@router.get(
    "/tasks/{task_id}",
    summary="One task's state, replicas and chain events",
    responses=error_responses(404, 422),
)
def task(task_id: Annotated[int, Path(ge=0, le=MAX_JSON_INT)], session: SessionDep) -> dict[str, Any]:
    """Replicas as the chain shows them: a hash only once revealed on chain, on-chain states only."""
    row, replicas, history = service.task_history(session=session, task_id=task_id)
    revealed = revealed_hashes(session=session, task_id=task_id)
    return {
        "task": public_task(row).model_dump(mode="json") if row else None,
        "replicas": [public_replica(r, revealed=revealed).model_dump(mode="json") for r in replicas],
        "events": [
            ChainEventPublic.model_validate(e, from_attributes=True).model_dump(mode="json") for e in history
        ],
    }


@router.get("/providers", response_model=ProvidersPublic, summary="Registered providers")
def providers(
    session: SessionDep, settings: SettingsDep, stakes: StakeOracleDep, offset: Offset = 0, limit: Limit = 100
) -> ProvidersPublic:
    """`online`: a fresh heartbeat and a stake at or above the minimum (what the matcher needs to give it
    work); `eligible`: the stake part alone."""
    rows, count = service.list_providers(session=session, offset=offset, limit=limit)
    minimum = min_stake_or_none(stakes)
    data = []
    for row in rows:
        item = ProviderPublic.model_validate(row, from_attributes=True)
        item.online = is_online(row, ttl_s=settings.heartbeat_ttl_s, min_stake=minimum)
        item.eligible = minimum is None or is_eligible(row, min_stake=minimum)
        data.append(item)
    return ProvidersPublic(data=data, count=count)


@router.get(
    "/providers/{address}", summary="A provider's reputation, rewards and slashes",
    responses=error_responses(422),
)
def provider(address: Annotated[str, Path(pattern=ADDRESS_PATTERN)], session: SessionDep) -> dict[str, Any]:
    ledger = service.provider_ledger(session=session, address=address.lower())
    return {
        "address": address.lower(),
        "reputation": ledger["reputation"],
        "rewards": [
            ChainEventPublic.model_validate(e, from_attributes=True).model_dump(mode="json")
            for e in ledger["rewards"]
        ],
        "slashes": [
            ChainEventPublic.model_validate(e, from_attributes=True).model_dump(mode="json")
            for e in ledger["slashes"]
        ],
        "total_rewards": ledger["total_rewards"],
        "total_slashed": ledger["total_slashed"],
    }


@router.get("/stats", summary="Network stats: providers online, capacity, tasks by state")
def stats(session: SessionDep, settings: SettingsDep, stakes: StakeOracleDep) -> dict[str, Any]:
    """Providers online count only those the matcher can give work (fresh heartbeat, stake >= minimum)."""
    return service.network_stats(session=session, heartbeat_ttl_s=settings.heartbeat_ttl_s,
                                 min_stake=min_stake_or_none(stakes))
