"""Providers: registration (stake checked against the registry), heartbeats, assignment delivery and the
reports a provider sends for its replicas (logs, outputs, signed usage, status), each only for a task it
was assigned."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from hashgrid.canonical import canonical_json
from hashgrid.errors import ChainError, InvalidInput
from hashgrid.runtime_class import classes_for
from marketplace.api.chain import StakeOracle
from marketplace.api.errors import BadRequest, Forbidden, NotAssigned, NotRegistered, StakeTooLow
from marketplace.api.schemas import HeartbeatIn, OutputsIn, ProviderRegisterIn, StatusIn, UsageIn
from marketplace.api.security import recover_address
from marketplace.models import BlobClaim, LogChunk, Provider, Replica, ReplicaStatus, Task, TaskBlob, utcnow

INFO_SECTIONS = {"cpu": "cpu", "mem": "mem", "storage": "storage", "os": "os", "gpu": "gpus"}


def check_self(*, wallet: str, address: str) -> str:
    """A provider acts only for itself: the signer must be the address in the path."""
    if wallet != address.lower():
        raise Forbidden(
            f"request signed by {wallet} cannot act for provider {address.lower()}",
            signer=wallet,
            provider=address.lower(),
        )
    return wallet


def register(*, session: Session, stakes: StakeOracle, provider: str, body: ProviderRegisterIn) -> Provider:
    """Create or refresh a provider's offer; refused while its stake is below the registry minimum."""
    stake, minimum = stakes.stake_of(provider), stakes.min_stake()
    if stake < minimum or stake == 0:
        raise StakeTooLow(
            f"provider {provider} has {stake} wei staked; the registry minimum is {minimum} wei "
            "(stake first: hashgrid provider stake)",
            stake=str(stake),
            minimum=str(minimum),
        )
    caps = body.capabilities
    cpu_caps, gpu_caps = caps.get("cpu"), caps.get("gpus")
    cpu: dict[str, Any] = cpu_caps if isinstance(cpu_caps, dict) else {}
    gpus: list[Any] = gpu_caps if isinstance(gpu_caps, list) else []
    runtimes = (
        [str(r) for r in caps.get("runtimes", []) if isinstance(r, str)]
        if isinstance(caps.get("runtimes"), list)
        else []
    )
    allowed = body.policy.get("runtimes")
    if isinstance(allowed, list):
        runtimes = [r for r in runtimes if r in allowed]
    row = session.get(Provider, provider) or Provider(address=provider, operator=provider)
    row.operator = (body.operator or provider).lower()
    row.capabilities = caps
    row.capabilities_hash = (body.capabilities_hash or "").lower().removeprefix("0x")
    row.prices = dict(body.prices)
    row.policy = body.policy
    row.runtimes = runtimes
    row.arch = str(cpu.get("arch", "x86_64"))[:32]
    row.total_cpus = float(body.offer.cores)
    row.total_memory_mb = body.offer.memory_mb
    row.total_disk_mb = body.offer.disk_mb
    row.gpus = min(body.offer.gpus, len(gpus))
    offered = [g for g in gpus[: row.gpus] if isinstance(g, dict)]
    row.gpu_model = str(offered[0].get("model"))[:128] if offered else None
    row.gpu_memory_mb = min((_int(g.get("memory_mb")) for g in offered), default=0)
    majors = {_int(g.get("cuda_major")) for g in offered}
    row.cuda_major = majors.pop() if len(majors) == 1 and min(majors) > 0 else None
    backends: dict[str, str] = {rt: backend for rt, backend in body.backends.items()
                                if rt in runtimes or (rt == "gpu" and "docker" in runtimes)}
    row.runtime_classes = classes_for(backends, offered)
    row.stake = str(stake)
    if row.last_heartbeat is None:  # a new provider starts with all of its offer free
        row.free_cpus, row.free_memory_mb = row.total_cpus, row.total_memory_mb
        row.free_disk_mb, row.free_gpus = row.total_disk_mb, row.gpus
    row.last_heartbeat = utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def _int(value: Any) -> int:
    """A non-negative int from a capabilities field (the provider's own document: anything may be there)."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def get_provider(*, session: Session, address: str) -> Provider:
    row = session.get(Provider, address.lower())
    if row is None:
        raise NotRegistered(
            f"provider {address.lower()} is not registered (POST /providers/register)",
            provider=address.lower(),
        )
    return row


def heartbeat(*, session: Session, provider: str, body: HeartbeatIn) -> Provider:
    row = get_provider(session=session, address=provider)
    row.free_cpus, row.free_memory_mb = body.free_cpus, body.free_memory_mb
    # a provider cannot free more GPUs than it offered (only attachable GPUs are offered, see provider/gpu.py)
    row.free_disk_mb, row.running = body.free_disk_mb, body.running
    row.free_gpus = min(body.free_gpus, row.gpus)
    row.last_heartbeat = utcnow()
    session.add(row)
    session.commit()
    return row


def min_stake_or_none(stakes: StakeOracle) -> int | None:
    """The registry minimum for public views, or None while the chain does not answer (the views then
    fall back to heartbeats alone rather than fail)."""
    try:
        return int(stakes.min_stake())
    except ChainError:
        return None


def is_eligible(row: Provider, *, min_stake: int) -> bool:
    """Staked at or above the registry minimum (as last indexed), so the matcher may give it work."""
    return int(row.stake or 0) >= min_stake


def is_online(row: Provider, *, ttl_s: int, min_stake: int | None = None) -> bool:
    """A fresh heartbeat and, when `min_stake` is given, a stake the matcher accepts: a provider under the
    minimum gets no work, so it is not counted as online (estimates and the explorer count only these)."""
    if row.last_heartbeat is None:
        return False
    if min_stake is not None and not is_eligible(row, min_stake=min_stake):
        return False
    seen = row.last_heartbeat
    return utcnow() - (seen if seen.tzinfo else seen.replace(tzinfo=utcnow().tzinfo)) <= timedelta(
        seconds=ttl_s
    )


def pending_assignments(*, session: Session, provider: str) -> list[tuple[Replica, Task]]:
    """Replicas assigned to `provider` that it has not acked yet, oldest first."""
    query = (
        select(Replica, Task)
        .join(Task, col(Task.task_id) == col(Replica.task_id))
        .where(
            col(Replica.provider) == provider,
            col(Replica.status) == ReplicaStatus.ASSIGNED,
            col(Replica.acked_at).is_(None),
        )
        .order_by(col(Replica.assigned_at), col(Replica.id))
    )
    return [(replica, task) for replica, task in session.exec(query)]


def replica_for(*, session: Session, task_id: int, provider: str) -> Replica:
    """The provider's newest replica of a task; 403 when it holds none."""
    replica = session.exec(
        select(Replica)
        .where(col(Replica.task_id) == task_id, col(Replica.provider) == provider)
        .order_by(col(Replica.round).desc())
    ).first()
    if replica is None:
        raise NotAssigned(
            f"provider {provider} is not assigned to task {task_id}; it may not report for it",
            task_id=task_id,
            provider=provider,
        )
    return replica


def ack(*, session: Session, task_id: int, provider: str) -> None:
    replica = replica_for(session=session, task_id=task_id, provider=provider)
    if replica.acked_at is None:
        replica.acked_at = utcnow()
        session.add(replica)
    session.commit()


def append_log(*, session: Session, task_id: int, provider: str, data: str, seq: int | None) -> int:
    """Store a log chunk. A chunk whose `seq` this provider already sent is acknowledged, not stored again:
    the daemon resends until it hears an acknowledgement, which a restart can lose."""
    replica_for(session=session, task_id=task_id, provider=provider)
    if seq is None:
        last = session.exec(
            select(func.max(LogChunk.seq)).where(
                col(LogChunk.task_id) == task_id, col(LogChunk.provider) == provider
            )
        ).one()
        seq = 0 if last is None else int(last) + 1
    elif session.exec(select(LogChunk.id).where(
            col(LogChunk.task_id) == task_id, col(LogChunk.provider) == provider, col(LogChunk.seq) == seq
    )).first() is not None:
        return seq  # a retry whose first delivery was stored but not acknowledged: keep one copy
    session.add(LogChunk(task_id=task_id, provider=provider, seq=seq, data=data))
    session.commit()
    return seq


def record_outputs(*, session: Session, task_id: int, provider: str, body: OutputsIn) -> Replica:
    """Record the output manifest. The provider must hold a claim to every blob in it (have uploaded the
    bytes itself): naming a hash learned elsewhere would otherwise hand that blob to the task's customer."""
    replica = replica_for(session=session, task_id=task_id, provider=provider)
    hashes = sorted({item.sha256 for item in body.files})
    known = set(session.exec(select(BlobClaim.sha256).where(
        col(BlobClaim.sha256).in_(hashes), col(BlobClaim.holder) == provider))) if hashes else set()
    missing = [digest for digest in hashes if digest not in known]
    if missing:
        raise InvalidInput(
            f"{len(missing)} output blob(s) were not uploaded by provider {provider} (PUT /blobs/<sha256> "
            f"first): {', '.join(missing[:5])}",
            missing=missing,
        )
    paths = [item.path for item in body.files]
    if len(set(paths)) != len(paths):
        raise InvalidInput("output manifest lists a path twice")
    replica.outputs = [item.model_dump() for item in body.files]
    if body.result_hash:
        replica.result_hash = "0x" + body.result_hash.removeprefix("0x")
    replica.updated_at = utcnow()
    session.add(replica)
    for digest in hashes:
        if session.get(TaskBlob, (task_id, provider, digest)) is None:
            session.add(TaskBlob(task_id=task_id, provider=provider, sha256=digest))
    session.commit()
    return replica


def record_usage(*, session: Session, task_id: int, provider: str, body: UsageIn) -> Replica:
    """Store a usage report after checking it names this task and provider and the provider signed it."""
    report = body.report
    if report.get("task_id") != task_id or str(report.get("provider", "")).lower() != provider:
        raise BadRequest(
            f"usage report is for task {report.get('task_id')!r} / provider "
            f"{report.get('provider')!r}, not task {task_id} / {provider}"
        )
    if not isinstance(report.get("usage"), dict):
        raise BadRequest("usage report has no 'usage' object")
    from eth_account.messages import _hash_eip191_message, encode_defunct

    try:
        digest = _hash_eip191_message(encode_defunct(primitive=canonical_json(report)))
    except Exception as exc:  # InvalidInput from canonical_json, or a non-JSON value
        raise BadRequest(f"usage report is not canonical-JSON-able: {exc}") from None
    signer = recover_address(digest, body.signature)
    if signer != provider:
        raise Forbidden(f"usage report is signed by {signer}, not by provider {provider}", signer=signer)
    replica = replica_for(session=session, task_id=task_id, provider=provider)
    replica.usage = report
    replica.usage_signature = body.signature
    result_hash = report.get("result_hash")
    if isinstance(result_hash, str) and result_hash:
        replica.result_hash = result_hash.lower()
    if replica.status in (ReplicaStatus.ASSIGNED, ReplicaStatus.RUNNING):
        replica.status = ReplicaStatus.EXECUTED
    replica.updated_at = utcnow()
    session.add(replica)
    session.commit()
    return replica


_ALLOWED_FROM = {ReplicaStatus.ASSIGNED, ReplicaStatus.RUNNING, ReplicaStatus.EXECUTED}


def record_status(*, session: Session, task_id: int, provider: str, body: StatusIn) -> Replica:
    replica = replica_for(session=session, task_id=task_id, provider=provider)
    if body.status == "refused" and not body.reason:
        raise InvalidInput("a refusal needs a reason (the customer sees it)")
    if replica.status not in _ALLOWED_FROM:
        raise BadRequest(
            f"replica of task {task_id} is {replica.status.value}; the provider can no longer "
            f"report {body.status}",
            status=replica.status.value,
        )
    replica.status = ReplicaStatus(body.status)
    replica.detail = body.reason
    if body.result_hash:
        replica.result_hash = "0x" + body.result_hash.removeprefix("0x")
    replica.updated_at = utcnow()
    session.add(replica)
    session.commit()
    return replica


def info_section(*, row: Provider, section: str) -> Any:
    key = INFO_SECTIONS[section]
    return row.capabilities.get(key, [] if key == "gpus" else {})
