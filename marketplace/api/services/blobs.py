"""Blobs: sha256-addressed uploads streamed into the content store with a size cap, stored once, and the
read rule (task outputs are private to the task's customer and assigned providers; other blobs are readable
by any signed wallet)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from sqlmodel import Session, col, select

from hashgrid.content import ContentStore
from hashgrid.errors import ContentMissing
from marketplace.api.errors import BadDigest, Forbidden, PayloadTooLarge
from marketplace.api.security import Caller, consume_nonce
from marketplace.models import Blob, Replica, Task, TaskBlob


async def receive_blob(
    *, store: ContentStore, sha256: str, chunks: AsyncIterator[bytes], max_bytes: int
) -> Path:
    """Stream a body to a temp file in the store while hashing and counting it; return the temp path only if
    it is within `max_bytes` and hashes to `sha256` (otherwise nothing is left behind)."""
    (store.root / "tmp").mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=store.root / "tmp", prefix="upload-")
    temp = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"blob exceeds the {max_bytes}-byte limit", limit=max_bytes)
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != sha256:
            raise BadDigest(
                f"uploaded bytes hash to sha256 {actual}, not {sha256} as the URL says; nothing was stored",
                expected=sha256,
                actual=actual,
            )
        return temp
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def existing_blob(*, session: Session, store: ContentStore, sha256: str) -> Blob | None:
    """The blob's row when its bytes are stored too (an upload of it can be skipped)."""
    blob = session.get(Blob, sha256)
    return blob if blob is not None and store.has(sha256) else None


def commit_blob(
    *, session: Session, store: ContentStore, caller: Caller, sha256: str, temp: Path | None, size: int
) -> bool:
    """Spend the request's nonce, move a received blob into place and record it. Returns whether it is new.

    The nonce is spent first so a replayed upload stores nothing; bytes go in before the row so a row never
    names missing bytes."""
    try:
        if caller.nonce is not None and caller.expiry is not None:
            consume_nonce(
                session, address=caller.address, nonce=caller.nonce, expiry=caller.expiry, commit=False
            )
        created = False
        if temp is not None:
            final = store.path_for(sha256)
            if not final.is_file():
                final.parent.mkdir(parents=True, exist_ok=True)
                temp.chmod(0o444)
                os.replace(temp, final)
                created = True
        if session.get(Blob, sha256) is None:
            session.add(Blob(sha256=sha256, size=size, uploader=caller.address))
            created = True
        session.commit()
        return created
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)


def check_blob_reader(*, session: Session, sha256: str, wallet: str) -> Blob:
    """The blob's row if `wallet` may read it."""
    blob = session.get(Blob, sha256)
    if blob is None:
        raise ContentMissing(f"blob sha256:{sha256} is not stored here", sha256=sha256)
    if blob.uploader == wallet:
        return blob
    task_ids = list(session.exec(select(TaskBlob.task_id).where(col(TaskBlob.sha256) == sha256)))
    if not task_ids:
        return blob
    customer = session.exec(
        select(Task.task_id).where(col(Task.task_id).in_(task_ids), col(Task.customer) == wallet)
    ).first()
    provider = session.exec(
        select(Replica.id).where(col(Replica.task_id).in_(task_ids), col(Replica.provider) == wallet)
    ).first()
    if customer is None and provider is None:
        raise Forbidden(
            f"blob sha256:{sha256} is a task output, readable by that task's customer and assigned "
            "providers only",
            sha256=sha256,
        )
    return blob
