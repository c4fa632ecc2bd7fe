"""Tasks of the signed customer: register a spec, list and read own tasks, follow logs, fetch the result."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Path as PathParam
from fastapi import Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from marketplace.api.deps import CurrentWallet, SessionDep, SettingsDep, json_object_body, signed_caller
from marketplace.api.errors import error_responses
from marketplace.api.guard import limit_wallet
from marketplace.api.ingest import SpecIngest
from marketplace.api.routing import Router
from marketplace.api.schemas import MAX_JSON_INT
from marketplace.api.security import check_token
from marketplace.api.services import tasks as service
from marketplace.api.services.visibility import commit_closed, customer_replica, replicas_of, revealed_hashes
from marketplace.api.spec_schema import check_wire_amounts
from marketplace.models import (
    LogChunkPublic,
    LogsPublic,
    TaskDetail,
    TaskPublic,
    TaskRegistration,
    TaskResult,
    TasksPublic,
    TaskStatus,
)

router = Router(prefix="/tasks", tags=["tasks"])
TERMINAL = {TaskStatus.SETTLED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
TaskId = Annotated[int, PathParam(ge=0, le=MAX_JSON_INT, description="the on-chain task id")]
SPEC_EXAMPLE = {
    "version": 1,
    "name": "hello",
    "runtime": "wasm",
    "module": "ab" * 32,
    "replicas": 3,
    "quorum": 2,
    "max_price_per_replica": "1000000000000000",
    "deadline_s": 3600,
}


@router.post(
    "",
    response_model=TaskRegistration,
    status_code=201,
    summary="Register a task spec",
    responses={
        200: {"model": TaskRegistration, "description": "Already registered by this customer"},
        **error_responses(401, 408, 413, 422, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "a task spec (hashgrid.spec.TaskSpec, examples/spec.schema.json)",
                    },
                    "examples": {"wasm": {"value": SPEC_EXAMPLE}},
                }
            },
        }
    },
)
async def create_task(request: Request) -> Response:
    """Validate the spec (every problem listed), record it (its canonical JSON is then served as blob
    <spec hash> for providers), and return the spec hash and the escrow to lock with `TaskEscrow.postTask`.
    The task appears under GET /tasks once the chain indexer sees its TaskPosted event."""
    # The hot path of ingest: async end to end (the signature and the spec are checked on the loop, then the
    # nonce and the spec row are committed by the group-commit writer, ingest.py), and it takes only the
    # Request, so the app also serves it as a plain Starlette route ahead of FastAPI's router (app.py):
    # FastAPI's routing and dependency solving cost as much CPU as the work itself. The body is therefore
    # parsed here, and documented above through openapi_extra.
    state = request.app.state
    caller = await signed_caller(request, state.settings)
    await limit_wallet(request, caller.address)
    prepared = service.prepare_spec(check_wire_amounts(await json_object_body(request)))
    if caller.token_id is not None:  # a bearer token: refused if signed out (not the signed hot path)
        await run_in_threadpool(check_token, state.engine, caller.token_id)
    written = await state.spec_writer.write(
        SpecIngest(
            customer=caller.address,
            spec_hash=prepared.spec_hash,
            spec=prepared.document,
            nonce=caller.nonce,
            expiry=caller.expiry,
        )
    )
    registration = service.registration(
        prepared, customer=caller.address, fee_bps=written.fee_bps, created=written.created
    )
    return Response(
        registration.model_dump_json(),
        status_code=201 if written.created else 200,
        media_type="application/json",
    )


@router.get(
    "", response_model=TasksPublic, summary="The signed customer's tasks", responses=error_responses(401)
)
def list_tasks(
    wallet: CurrentWallet,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> TasksPublic:
    rows, count = service.list_tasks(session=session, customer=wallet, offset=offset, limit=limit)
    return TasksPublic(
        data=[TaskPublic.model_validate(row, from_attributes=True) for row in rows], count=count
    )


@router.get(
    "/{task_id}",
    response_model=TaskDetail,
    summary="One of the customer's tasks",
    responses=error_responses(401, 403, 404, 422),
)
def get_task(task_id: TaskId, wallet: CurrentWallet, session: SessionDep) -> TaskDetail:
    """Status, replicas (with refusal reasons), why it is not placed yet, and the accepted result hash. A
    replica's own hash shows once the task's commit phase has closed on chain (until then only one revealed
    on chain in an earlier round)."""
    task = service.own_task(session=session, task_id=task_id, customer=wallet)
    rows = replicas_of(session=session, task_id=task_id)
    closed = commit_closed(task=task, replicas=rows)
    revealed = revealed_hashes(session=session, task_id=task_id)
    detail = TaskDetail.model_validate(task, from_attributes=True)
    detail.replica_list = [customer_replica(r, closed=closed, revealed=revealed) for r in rows]
    return detail


def _log_page(session: Session, task_id: int, after: int, provider: str | None) -> list[LogChunkPublic]:
    return [
        LogChunkPublic.model_validate(chunk, from_attributes=True)
        for chunk in service.logs_after(session=session, task_id=task_id, after_id=after, provider=provider)
    ]


async def _follow(
    request: Request, task_id: int, after: int, interval: float, provider: str | None
) -> AsyncIterator[str]:
    """SSE: `log` events as chunks arrive, `status` on changes, `end` once the task is final and drained;
    only `provider`'s chunks when a provider reads."""
    engine = request.app.state.engine
    last_id, last_status = after, None

    def poll() -> tuple[list[tuple[int, dict[str, Any]]], TaskStatus]:
        with Session(engine) as session:
            chunks = service.logs_after(
                session=session, task_id=task_id, after_id=last_id, provider=provider
            )
            status = service.get_task(session=session, task_id=task_id).status
            return [
                (
                    int(c.id or 0),
                    LogChunkPublic.model_validate(c, from_attributes=True).model_dump(mode="json"),
                )
                for c in chunks
            ], status

    while True:
        chunks, status = await run_in_threadpool(poll)
        for chunk_id, chunk in chunks:
            last_id = chunk_id
            yield f"id: {chunk_id}\nevent: log\ndata: {json.dumps(chunk)}\n\n"
        if status != last_status:
            last_status = status
            yield f"event: status\ndata: {json.dumps({'status': status.value})}\n\n"
        if status in TERMINAL and not chunks:
            yield "event: end\ndata: {}\n\n"
            return
        if await request.is_disconnected():
            return
        if not chunks:
            await asyncio.sleep(interval)


async def _releasing(stream: AsyncIterator[str], release: Callable[[], None]) -> AsyncIterator[str]:
    try:
        async for event in stream:
            yield event
    finally:
        release()


@router.get(
    "/{task_id}/logs",
    response_model=LogsPublic,
    summary="A task's logs (JSON, or SSE with follow)",
    responses={200: {"content": {"text/event-stream": {}}}, **error_responses(401, 403, 404, 422)},
)
def get_logs(
    task_id: TaskId,
    request: Request,
    wallet: CurrentWallet,
    session: SessionDep,
    settings: SettingsDep,
    follow: bool = False,
    after: Annotated[int, Query(ge=0, le=MAX_JSON_INT)] = 0,
) -> Any:
    """The task's customer reads every replica's logs; a provider assigned to it only its own replica's.
    With `follow=true` the response is a Server-Sent Events stream that ends when the task is final;
    `after` resumes after a chunk id."""
    task = service.get_task(session=session, task_id=task_id)
    provider = service.check_log_reader(session=session, task=task, wallet=wallet)
    if follow:
        release = request.app.state.streams.take(wallet)  # a few open follows per wallet (guard.StreamSlots)
        stream = _releasing(_follow(request, task_id, after, settings.poll_interval_s, provider), release)
        weakref.finalize(stream, release)  # also when the stream is dropped before it starts
        headers = {"Cache-Control": "no-cache"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    data = _log_page(session, task_id, after, provider)
    return LogsPublic(data=data, count=len(data))


@router.get(
    "/{task_id}/result",
    response_model=TaskResult,
    summary="The verified result of a settled task",
    responses=error_responses(401, 403, 404, 409, 422),
)
def get_result(task_id: TaskId, wallet: CurrentWallet, session: SessionDep) -> TaskResult:
    """The accepted result hash and the output manifest (blob hashes) of an agreeing replica; download the
    blobs with GET /blobs/{sha256}."""
    task = service.own_task(session=session, task_id=task_id, customer=wallet)
    return TaskResult(**service.task_result(session=session, task=task))
