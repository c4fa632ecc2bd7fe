"""Providers: register (signed by the staked address), heartbeat, long-poll assignments, and report logs,
outputs, signed usage and status for assigned tasks; public device info."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from marketplace.api.deps import CurrentWallet, SessionDep, SettingsDep, StakeOracleDep
from marketplace.api.errors import error_responses
from marketplace.api.routing import Router, spend_nonce_now, spends_nonce
from marketplace.api.schemas import (
    ADDRESS_PATTERN,
    MAX_JSON_INT,
    HeartbeatIn,
    LogIn,
    Ok,
    OutputsIn,
    ProviderRegisterIn,
    StatusIn,
    UsageIn,
)
from marketplace.api.services import providers as service
from marketplace.models import AssignmentPublic, AssignmentsPublic, Provider, ProviderPublic

router = Router(prefix="/providers", tags=["providers"])
Address = Annotated[str, Path(pattern=ADDRESS_PATTERN, description="the provider's 0x address")]
TaskId = Annotated[int, Path(ge=0, le=MAX_JSON_INT)]
SIGNED = error_responses(401, 403, 404, 422)


def public(row: Provider, *, ttl_s: int, min_stake: int | None = None) -> ProviderPublic:
    out = ProviderPublic.model_validate(row, from_attributes=True)
    out.online = service.is_online(row, ttl_s=ttl_s, min_stake=min_stake)
    out.eligible = min_stake is None or service.is_eligible(row, min_stake=min_stake)
    return out


@router.post(
    "/register",
    response_model=ProviderPublic,
    summary="Register or refresh a provider's offer",
    responses=error_responses(401, 403, 422, 503),
)
def register(
    body: ProviderRegisterIn,
    wallet: CurrentWallet,
    session: SessionDep,
    stakes: StakeOracleDep,
    settings: SettingsDep,
) -> ProviderPublic:
    """Signed by the provider's staked address: capabilities (the daemon's device document), prices, a policy
    summary and the operator. Refused (403) while the on-chain stake is below the registry minimum."""
    row = service.register(session=session, stakes=stakes, provider=wallet, body=body)
    return public(row, ttl_s=settings.heartbeat_ttl_s)


@router.post("/{address}/heartbeat", response_model=Ok, summary="Report free resources", responses=SIGNED)
def heartbeat(address: Address, body: HeartbeatIn, wallet: CurrentWallet, session: SessionDep) -> Ok:
    service.heartbeat(session=session, provider=service.check_self(wallet=wallet, address=address), body=body)
    return Ok()


@router.get(
    "/{address}/assignments",
    response_model=AssignmentsPublic,
    summary="Long-poll new assignments",
    responses=SIGNED,
)
@spends_nonce
async def assignments(
    address: Address,
    request: Request,
    wallet: CurrentWallet,
    session: SessionDep,
    settings: SettingsDep,
    wait: Annotated[float, Query(ge=0, le=300, description="seconds to wait for one")] = 0,
) -> AssignmentsPublic:
    """Replicas assigned to this provider and not acked yet (at least once: ack each after journaling it).
    Waits up to `wait` seconds (capped by the server's long_poll_max_s) when there are none."""
    await run_in_threadpool(spend_nonce_now, session)  # the request's session is done before any wait
    provider = service.check_self(wallet=wallet, address=address)
    engine = request.app.state.engine
    bell = request.app.state.assignment_bell
    deadline = time.monotonic() + min(wait, settings.long_poll_max_s)

    def poll() -> list[AssignmentPublic]:
        with Session(engine) as session:
            return [
                AssignmentPublic(
                    task_id=task.task_id,
                    spec_hash=task.spec_hash,
                    round=replica.round,
                    assigned_at=replica.assigned_at,
                    runtime_class=task.runtime_class,
                )
                for replica, task in service.pending_assignments(session=session, provider=provider)
            ]

    release = request.app.state.streams.take(wallet) if wait > 0 else (lambda: None)  # guard.StreamSlots
    try:
        while True:
            rung = bell.rings
            found = await run_in_threadpool(poll)
            if found or time.monotonic() >= deadline or await request.is_disconnected():
                return AssignmentsPublic(data=found, count=len(found))
            # woken by this process's matcher (bell.py), else re-checked for other processes' assignments
            recheck = request.app.state.assignment_recheck_s
            await bell.wait(min(recheck, max(0.0, deadline - time.monotonic())), since=rung)
    finally:
        release()


@router.post(
    "/{address}/assignments/{task_id}/ack",
    response_model=Ok,
    summary="Acknowledge an assignment",
    responses=SIGNED,
)
def ack(address: Address, task_id: TaskId, wallet: CurrentWallet, session: SessionDep) -> Ok:
    service.ack(session=session, task_id=task_id, provider=service.check_self(wallet=wallet, address=address))
    return Ok()


@router.post(
    "/{address}/tasks/{task_id}/logs", response_model=Ok, summary="Append a log chunk", responses=SIGNED
)
def post_logs(
    address: Address, task_id: TaskId, body: LogIn, wallet: CurrentWallet, session: SessionDep
) -> Ok:
    provider = service.check_self(wallet=wallet, address=address)
    seq = service.append_log(
        session=session, task_id=task_id, provider=provider, data=body.data, seq=body.seq
    )
    return Ok(detail=f"seq {seq}")


@router.post(
    "/{address}/tasks/{task_id}/outputs",
    response_model=Ok,
    summary="Report the output manifest",
    responses=SIGNED,
)
def post_outputs(
    address: Address, task_id: TaskId, body: OutputsIn, wallet: CurrentWallet, session: SessionDep
) -> Ok:
    """Blob hashes of the outputs (uploaded first with PUT /blobs/{sha256}); they become private to the task's
    customer and assigned providers."""
    provider = service.check_self(wallet=wallet, address=address)
    service.record_outputs(session=session, task_id=task_id, provider=provider, body=body)
    return Ok()


@router.post(
    "/{address}/tasks/{task_id}/usage",
    response_model=Ok,
    summary="Report signed usage",
    responses=error_responses(400, 401, 403, 404, 422),
)
def post_usage(
    address: Address, task_id: TaskId, body: UsageIn, wallet: CurrentWallet, session: SessionDep
) -> Ok:
    """The daemon's usage report: EIP-191 signature by the provider over the canonical JSON of `report`
    ({task_id, provider, usage, result_hash}); billing reads it."""
    provider = service.check_self(wallet=wallet, address=address)
    service.record_usage(session=session, task_id=task_id, provider=provider, body=body)
    return Ok()


@router.post(
    "/{address}/tasks/{task_id}/status",
    response_model=Ok,
    summary="Report a replica's status",
    responses=error_responses(400, 401, 403, 404, 422),
)
def post_status(
    address: Address, task_id: TaskId, body: StatusIn, wallet: CurrentWallet, session: SessionDep
) -> Ok:
    """refused (with the policy's reason, shown to the customer), running, or executed."""
    provider = service.check_self(wallet=wallet, address=address)
    service.record_status(session=session, task_id=task_id, provider=provider, body=body)
    return Ok()


@router.get(
    "/{address}/info",
    summary="Everything the provider's daemon reported",
    responses=error_responses(404, 422),
)
def info(
    address: Address, session: SessionDep, settings: SettingsDep, stakes: StakeOracleDep
) -> dict[str, Any]:
    row = service.get_provider(session=session, address=address)
    return {
        "provider": public(row, ttl_s=settings.heartbeat_ttl_s,
                           min_stake=service.min_stake_or_none(stakes)).model_dump(mode="json"),
        "device": row.capabilities,
    }


@router.get(
    "/{address}/info/{section}",
    summary="One section of the device document",
    responses=error_responses(404, 422),
)
def info_section(
    address: Address, section: Literal["cpu", "mem", "storage", "os", "gpu"], session: SessionDep
) -> Any:
    row = service.get_provider(session=session, address=address)
    return service.info_section(row=row, section=section)
