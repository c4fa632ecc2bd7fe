"""Blobs: sha256-addressed uploads streamed into the content store with a size cap, stored once, each uploader
recorded as a claimant; and the read rule (docs/api.md, "Who may see what"): a blob is readable only by a
wallet with a claim to it: its uploaders; a task's customer and, while assigned, its providers for the task's
spec and inputs; a task's customer for its outputs once the commit phase has closed. Anyone else is told it
is not stored, so a hash cannot be used to learn whether a blob exists."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from hashgrid.content import ContentStore
from hashgrid.errors import ContentMissing
from marketplace.api.errors import BadDigest, PayloadTooLarge
from marketplace.api.security import Caller, consume_nonce
from marketplace.api.services.visibility import FINAL_REPLICA, FINAL_TASK, task_commit_closed
from marketplace.models import Blob, BlobClaim, Replica, SpecRecord, Task, TaskBlob


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
    """The blob's row when its bytes are stored too."""
    blob = session.get(Blob, sha256)
    return blob if blob is not None and store.has(sha256) else None


def has_claim(*, session: Session, sha256: str, wallet: str) -> bool:
    return session.get(BlobClaim, (sha256, wallet)) is not None


def commit_blob(
    *, session: Session, store: ContentStore, caller: Caller, sha256: str, temp: Path | None, size: int
) -> bool:
    """Spend the request's nonce, move a received blob into place, record it and the caller's claim to it.
    Returns whether the claim is new (never whether another wallet had stored the bytes).

    The nonce is spent first so a replayed upload stores nothing; bytes go in before the row so a row never
    names missing bytes. `temp` is None only for a caller that already holds a claim."""
    try:
        if caller.nonce is not None and caller.expiry is not None:
            consume_nonce(
                session, address=caller.address, nonce=caller.nonce, expiry=caller.expiry, commit=False
            )
        if temp is not None:
            final = store.path_for(sha256)
            if not final.is_file():
                final.parent.mkdir(parents=True, exist_ok=True)
                temp.chmod(0o444)
                os.replace(temp, final)
        if session.get(Blob, sha256) is None:
            session.add(Blob(sha256=sha256, size=size, uploader=caller.address))
        created = not has_claim(session=session, sha256=sha256, wallet=caller.address)
        if created:
            session.add(BlobClaim(sha256=sha256, holder=caller.address))
        session.commit()
        return created
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)


def spec_inputs(spec: dict[str, Any]) -> set[str]:
    """The blobs a (normalised) spec document names: its inputs and its wasm module."""
    named = {str(item.get("sha256")) for item in spec.get("inputs") or [] if isinstance(item, dict)}
    if spec.get("module"):
        named.add(str(spec["module"]))
    return named


def may_read(*, session: Session, sha256: str, wallet: str) -> bool:
    """Whether `wallet` has a claim to blob `sha256` (stored or a registered spec), by the rule above."""
    if has_claim(session=session, sha256=sha256, wallet=wallet):
        return True
    if session.get(SpecRecord, (sha256, wallet)) is not None:
        return True
    if _assigned_reads(session=session, sha256=sha256, provider=wallet):
        return True
    linked = session.exec(
        select(Task).join(TaskBlob, col(TaskBlob.task_id) == col(Task.task_id)).where(
            col(TaskBlob.sha256) == sha256, col(Task.customer) == wallet
        )
    ).all()
    return any(task_commit_closed(session=session, task=task) for task in linked)


def _assigned_reads(*, session: Session, sha256: str, provider: str) -> bool:
    """A provider holding an unfinished replica of an unfinished task reads that task's spec, and the inputs
    the spec names when the task's customer holds a claim to them (naming a hash in a spec gives no claim)."""
    active = session.exec(
        select(Task).join(Replica, col(Replica.task_id) == col(Task.task_id)).where(
            col(Replica.provider) == provider,
            col(Replica.status).not_in(FINAL_REPLICA),
            col(Task.status).not_in(FINAL_TASK),
        )
    ).all()
    for task in active:
        if task.spec_hash == sha256:
            return True
        record = session.get(SpecRecord, (task.spec_hash, task.customer))
        if record is not None and sha256 in spec_inputs(record.spec) and has_claim(
            session=session, sha256=sha256, wallet=task.customer
        ):
            return True
    return False


def check_blob_reader(*, session: Session, sha256: str, wallet: str) -> None:
    """Refuse a wallet with no claim exactly as a missing blob is refused (404), so that probing hashes
    tells a stranger nothing."""
    if not may_read(session=session, sha256=sha256, wallet=wallet):
        raise ContentMissing(f"blob sha256:{sha256} is not stored here (or not readable by {wallet})",
                             sha256=sha256)
