"""Content-addressed blobs: PUT streams an upload checked against the sha256 in its URL (and gives the
uploader a claim to it), GET streams it back and HEAD gives its size, both only to a wallet with a claim to it
(services/blobs.py): to anyone else every blob is 404, stored or not."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlmodel import Session

from hashgrid.errors import ContentMissing
from marketplace.api.deps import CurrentWallet, SessionDep, SettingsDep, StoreDep, authenticate
from marketplace.api.errors import error_responses
from marketplace.api.guard import limit_wallet
from marketplace.api.routing import Router
from marketplace.api.schemas import SHA256_PATTERN
from marketplace.api.security import check_revoked
from marketplace.api.services import blobs as service
from marketplace.api.services.tasks import spec_blob
from marketplace.models import Blob, BlobPublic

router = Router(prefix="/blobs", tags=["blobs"])
Sha256 = Annotated[str, Path(pattern=SHA256_PATTERN, description="sha256 of the blob, 64 lower-case hex")]


@router.put(
    "/{sha256}",
    response_model=BlobPublic,
    status_code=201,
    summary="Upload a blob (streamed; stored once)",
    responses={
        200: {"model": BlobPublic, "description": "Already stored: nothing was uploaded"},
        **error_responses(400, 401, 413, 422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_blob(
    sha256: Sha256,
    request: Request,
    response: Response,
    settings: SettingsDep,
    store: StoreDep,
) -> BlobPublic:
    """Signed with bodySha256 = the blob's sha256 (the server checks the stream against it, so the body is
    never buffered). The uploader gets a claim to the blob. A blob this wallet already uploaded is not read
    again (200); any other upload is read in full and checked, whether or not another wallet stored the same
    bytes, so the answer never says that. Bytes that hash differently are a 400."""
    caller = authenticate(request, settings, body_sha256=sha256)  # a declared size over the cap: guard.py
    await limit_wallet(request, caller.address)
    engine = request.app.state.engine  # a session per thread hop: no connection held while the body streams

    def lookup() -> Blob | None:
        """The stored blob if this wallet already holds a claim to it (nothing to read then)."""
        with Session(engine, expire_on_commit=False) as session:
            if caller.token_id is not None:
                check_revoked(session, caller.token_id)
            blob = service.existing_blob(session=session, store=store, sha256=sha256)
            mine = blob is not None and service.has_claim(
                session=session, sha256=sha256, wallet=caller.address
            )
            return blob if mine else None

    def commit(temp: FilePath | None, size: int) -> bool:
        with Session(engine, expire_on_commit=False) as session:
            return service.commit_blob(
                session=session, store=store, caller=caller, sha256=sha256, temp=temp, size=size
            )

    existing = await run_in_threadpool(lookup)
    if existing is not None:
        await run_in_threadpool(commit, None, existing.size)
        response.status_code = 200
        return BlobPublic(sha256=sha256, size=existing.size, created=False)
    temp = await service.receive_blob(
        store=store, sha256=sha256, chunks=request.stream(), max_bytes=settings.max_blob_bytes
    )
    size = temp.stat().st_size
    created = await run_in_threadpool(commit, temp, size)
    response.status_code = 201 if created else 200
    return BlobPublic(sha256=sha256, size=size, created=created)


@router.get(
    "/{sha256}",
    summary="Download a blob (streamed)",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **error_responses(401, 404, 422)},
)
def get_blob(sha256: Sha256, wallet: CurrentWallet, session: SessionDep, store: StoreDep) -> Response:
    """Readable by a wallet with a claim to it: its uploaders; a task's customer and, while assigned, its
    providers for the task's spec (by spec hash) and inputs; the customer for a task's outputs once its commit
    phase has closed on chain. Anyone else gets the 404 a missing blob gets."""
    service.check_blob_reader(session=session, sha256=sha256, wallet=wallet)
    path = store.path_for(sha256)
    if path.is_file():
        return FileResponse(path, media_type="application/octet-stream", headers={"ETag": f'"{sha256}"'})
    spec = spec_blob(session=session, sha256=sha256)
    if spec is None:
        raise ContentMissing(f"blob sha256:{sha256} is recorded but its bytes are missing", sha256=sha256)
    return Response(spec, media_type="application/octet-stream", headers={"ETag": f'"{sha256}"'})


@router.head(
    "/{sha256}",
    summary="Whether a blob is stored and readable by the signer, and its size",
    status_code=200,
    responses=error_responses(401, 404, 422),
)
def head_blob(sha256: Sha256, wallet: CurrentWallet, session: SessionDep, store: StoreDep) -> Response:
    """Signed, and 404 to a wallet without a claim, like GET: an unsigned HEAD was an oracle for whether
    anyone had uploaded given bytes (a guessed output, say)."""
    service.check_blob_reader(session=session, sha256=sha256, wallet=wallet)
    blob = service.existing_blob(session=session, store=store, sha256=sha256)
    if blob is not None:
        size = blob.size
    else:
        spec = spec_blob(session=session, sha256=sha256)
        if spec is None:
            raise ContentMissing(f"blob sha256:{sha256} is not stored here", sha256=sha256)
        size = len(spec)
    return Response(status_code=200, headers={"Content-Length": str(size), "ETag": f'"{sha256}"'})
