"""The provider daemon's side of the marketplace HTTP API (docs/api.md): a small client signed with the
provider's key (EIP-712 per request, `hashgrid.signing.HashgridAuth`), and `MarketplaceReporter`, which the
daemon calls to register, heartbeat, stream logs and report outputs, usage and status.

Reporting never stops the daemon and loses nothing: logs, outputs, usage and statuses wait in the journal's
outbox until the marketplace acknowledges them (provider/outbox.py), so a marketplace that is down only delays
what the customer sees. Heartbeats and acks are retried a few times and then left to the next one.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from hashgrid.canonical import to_hex32
from hashgrid.content import ContentStore
from hashgrid.errors import HashgridError
from hashgrid.signing import HashgridAuth
from provider.outbox import Outbox, OutboxSender, Report, ReportKind

log = logging.getLogger(__name__)
T = TypeVar("T")

LOG_FLUSH_BYTES = 16 * 1024
LOG_FLUSH_S = 0.5
HEARTBEAT_TIMEOUT_S = 3.0  # a stuck beat must not delay the next one past the marketplace's TTL
LOG_PART_CHARS = 200 * 1024  # one POST .../logs body stays well under the route's cap


class MarketplaceError(HashgridError):
    """The marketplace refused a request (4xx) or could not be reached (retryable)."""

    code = "marketplace_error"
    component = "provider"
    http_status = 502

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None,
                 remote_code: str = "", **details: Any) -> None:
        super().__init__(message, status=status, remote_code=remote_code, **details)
        self.retryable = retryable  # type: ignore[misc]
        self.status = status
        self.remote_code = remote_code


class MarketplaceClient:
    """Signed calls to the marketplace as one provider (thread-safe: httpx.Client is)."""

    def __init__(self, url: str, private_key: str, *, chain_id: int, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.auth = HashgridAuth(private_key, chain_id=chain_id)
        self.address = self.auth.account.address.lower()
        self.timeout = timeout
        self.http = httpx.Client(base_url=self.url, auth=self.auth, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ plumbing
    def _request(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, timeout=timeout or self.timeout, **kw)
        except httpx.HTTPError as exc:
            raise MarketplaceError(f"marketplace {self.url} unreachable: {type(exc).__name__}: {exc}",
                                   retryable=True, path=path) from None
        if response.status_code >= 400:
            try:
                body = response.json()
                message, code = str(body.get("message", body)), str(body.get("code", ""))
            except ValueError:
                message, code = response.text[:500], ""
            raise MarketplaceError(f"{method} {path}: {response.status_code} {code}: {message}",
                                   retryable=response.status_code >= 500, status=response.status_code,
                                   remote_code=code, path=path)
        return response

    def _provider(self, suffix: str) -> str:
        return f"/providers/{self.address}{suffix}"

    # ------------------------------------------------------------------ provider calls
    def register(self, *, capabilities: dict[str, Any], capabilities_hash: str | None, prices: dict[str, str],
                 policy: dict[str, Any], offer: dict[str, Any],
                 backends: dict[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"capabilities": capabilities, "prices": prices, "policy": policy,
                                "offer": offer, "backends": backends or {}}
        if capabilities_hash:
            body["capabilities_hash"] = capabilities_hash
        return dict(self._request("POST", "/providers/register", json=body).json())

    def heartbeat(self, *, free_cpus: float, free_memory_mb: int, free_disk_mb: int = 0, free_gpus: int = 0,
                  running: int = 0) -> None:
        self._request("POST", self._provider("/heartbeat"), timeout=HEARTBEAT_TIMEOUT_S, json={
            "free_cpus": max(0.0, free_cpus), "free_memory_mb": max(0, free_memory_mb),
            "free_disk_mb": max(0, free_disk_mb), "free_gpus": max(0, free_gpus), "running": running})

    def assignments(self, wait: float = 0.0) -> list[dict[str, Any]]:
        """Long-poll: assigned, un-acked replicas ({task_id, spec_hash, round, assigned_at})."""
        response = self._request("GET", self._provider("/assignments"), params={"wait": wait},
                                 timeout=wait + self.timeout)
        return list(response.json()["data"])

    def ack(self, task_id: int) -> None:
        self._request("POST", self._provider(f"/assignments/{task_id}/ack"))

    def append_log(self, task_id: int, data: str, *, seq: int | None = None) -> None:
        body: dict[str, Any] = {"data": data}
        if seq is not None:
            body["seq"] = seq
        self._request("POST", self._provider(f"/tasks/{task_id}/logs"), json=body)

    def put_blob(self, data: bytes, sha256: str) -> None:
        self._request("PUT", f"/blobs/{sha256}", content=data,
                      headers={"Content-Type": "application/octet-stream"})

    def get_blob(self, sha256: str) -> bytes:
        return self._request("GET", f"/blobs/{sha256}").content

    def outputs(self, task_id: int, files: Sequence[dict[str, Any]], *, result_hash: str | None) -> None:
        body: dict[str, Any] = {"files": list(files)}
        if result_hash:
            body["result_hash"] = result_hash
        self._request("POST", self._provider(f"/tasks/{task_id}/outputs"), json=body)

    def usage(self, task_id: int, report: dict[str, Any]) -> None:
        self._request("POST", self._provider(f"/tasks/{task_id}/usage"), json=report)

    def status(self, task_id: int, status: str, *, reason: str | None = None,
               result_hash: str | None = None) -> None:
        body: dict[str, Any] = {"status": status}
        if reason is not None:
            body["reason"] = reason[:2000]
        if result_hash is not None:
            body["result_hash"] = result_hash
        self._request("POST", self._provider(f"/tasks/{task_id}/status"), json=body)


def retrying(what: str, call: Callable[[], T], *, attempts: int = 4, backoff: float = 0.25) -> T | None:
    """Run `call`; retry retryable failures with back-off; log and return None when it gives up."""
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except MarketplaceError as exc:
            if not exc.retryable or attempt == attempts:
                log.warning("marketplace: %s failed: %s", what, exc.message)
                return None
            time.sleep(delay)
            delay *= 2
    return None


@dataclass
class _LogBuffer:
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    pending: list[str] = field(default_factory=list)
    size: int = 0
    flushed_at: float = field(default_factory=time.monotonic)


class MarketplaceReporter:
    """What the daemon tells the marketplace: registration and heartbeats directly; logs, outputs, usage and
    statuses through the journal's outbox (provider/outbox.py), so none is lost while the marketplace is
    down, however long."""

    def __init__(self, client: MarketplaceClient, store: ContentStore, outbox: Outbox) -> None:
        self.client = client
        self.store = store
        self.outbox = outbox
        self.sender = OutboxSender(outbox, self.send)
        self._logs: dict[int, _LogBuffer] = {}
        self._lock = threading.Lock()
        self._offer: dict[str, Any] = {}
        self._beat_failing = False

    def start(self, *, on_delivered: Callable[[int], None] | None = None) -> None:
        """Start delivering queued reports (those left by an earlier run first)."""
        self.sender.on_delivered = on_delivered
        queued = self.outbox.pending()
        if queued:
            log.info("%d report(s) from before the restart are still to be delivered", queued)
        self.sender.start()

    def close(self, *, drain_s: float = 3.0) -> None:
        left = self.sender.stop(drain_s=drain_s)
        if left:
            log.warning("%d report(s) not acknowledged by the marketplace yet; kept in the journal, sent at "
                        "the next start", left)

    def pending(self, task_id: int) -> int:
        """Reports of this task the marketplace has not acknowledged."""
        return self.outbox.pending(task_id)

    def send(self, report: Report) -> None:
        """Deliver one queued report (raises MarketplaceError; the sender retries or rejects it)."""
        body, task_id = report.body, report.task_id
        if report.kind == ReportKind.LOG:
            self.client.append_log(task_id, str(body["data"]), seq=int(body["seq"]))
        elif report.kind == ReportKind.BLOB:
            sha = str(body["sha256"])
            try:
                data = self.store.get_bytes(sha)
            except HashgridError as exc:  # the content store lost it: nothing can ever send it
                raise MarketplaceError(f"output blob {sha}: {exc.message}", status=0) from None
            self.client.put_blob(data, sha)
        elif report.kind == ReportKind.OUTPUTS:
            self.client.outputs(task_id, list(body["files"]), result_hash=body.get("result_hash"))
        elif report.kind == ReportKind.USAGE:
            self.client.usage(task_id, body)
        else:
            self.client.status(task_id, str(body["status"]), reason=body.get("reason"),
                               result_hash=body.get("result_hash"))

    def _queue(self, task_id: int, kind: ReportKind, body: dict[str, Any]) -> None:
        self.outbox.put(task_id, kind, body)
        self.sender.wake()

    def register(self, *, device: dict[str, Any], config: Any, attempts: int = 20) -> dict[str, Any]:
        """Register the offer (refused while under-staked); raises when the marketplace stays unreachable."""
        from provider.detect import capabilities_hash
        from provider.policy import backend_for

        policy = config.policy
        # the backend this daemon will really use per runtime: its runtime classes (hashgrid/runtime_class.py)
        have = device.get("runtimes") or []
        backends = {runtime: backend for runtime in ("docker", "wasm")
                    if (backend := backend_for(runtime, policy, have)) is not None}
        if device.get("gpus") and (gpu := backend_for("docker", policy, have, gpu=True, device=device)):
            backends["gpu"] = gpu  # docker tasks with GPUs run only where GPUs attach
        summary = {"runtimes": list(policy.runtimes), "allow_network": policy.allow_network,
                   "max_cpus": policy.max_cpus, "max_memory_mb": policy.max_memory_mb,
                   "max_disk_mb": policy.max_disk_mb, "max_gpus": policy.max_gpus,
                   "max_timeout_s": policy.max_timeout_s, "allow_any_module": policy.allow_any_module,
                   "allow_any_image": policy.allow_any_image}
        prices = {k: str(int(v)) for k, v in config.prices.model_dump().items()}
        offer = config.offer.model_dump()
        self._offer = offer
        delay = 0.25
        for attempt in range(1, attempts + 1):
            try:
                row = self.client.register(capabilities=device, capabilities_hash=to_hex32(
                    capabilities_hash(device)), prices=prices, policy=summary, offer=offer, backends=backends)
                log.info("registered with the marketplace %s as %s", self.client.url, self.client.address)
                return row
            except MarketplaceError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                log.info("marketplace not reachable yet (%s); retrying", exc.message)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise MarketplaceError("unreachable")  # pragma: no cover

    def heartbeat(self, beat: dict[str, Any]) -> None:
        """One beat, not retried and not queued (the next one, `heartbeat_interval` later, replaces it); a
        failure is logged once per outage. The daemon meters cores, memory and GPUs per running task; disk is
        offered whole."""
        try:
            self.client.heartbeat(
                free_cpus=float(beat.get("free_cores", 0)), free_memory_mb=int(beat.get("free_memory_mb", 0)),
                free_disk_mb=int(self._offer.get("disk_mb", 0)), free_gpus=int(beat.get("free_gpus", 0)),
                running=len(beat.get("running", [])))
        except MarketplaceError as exc:
            if not self._beat_failing:
                log.warning("marketplace: heartbeat failed: %s", exc.message)
            self._beat_failing = True
            return
        if self._beat_failing:
            log.info("marketplace: heartbeats answered again")
        self._beat_failing = False

    def running(self, task_id: int) -> None:
        self._queue(task_id, ReportKind.STATUS, {"status": "running"})

    def refused(self, task_id: int, reason: str) -> None:
        self._queue(task_id, ReportKind.STATUS, {"status": "refused",
                                                 "reason": (reason or "refused by policy")[:2000]})

    # ------------------------------------------------------------------ logs
    def log(self, task_id: int, chunk: bytes) -> None:
        """Buffer a log chunk; queue it when the buffer is large or old enough."""
        with self._lock:
            buffer = self._logs.setdefault(task_id, _LogBuffer())
            text = buffer.decoder.decode(chunk)
            if text:
                buffer.pending.append(text)
                buffer.size += len(text)
            due = buffer.size >= LOG_FLUSH_BYTES or time.monotonic() - buffer.flushed_at >= LOG_FLUSH_S
        if due:
            self.flush_logs(task_id)

    def flush_logs(self, task_id: int, *, final: bool = False) -> None:
        """Queue what is buffered, in parts of at most LOG_PART_CHARS, each with its own sequence number."""
        # the journal first, then the buffers: the order the daemon takes them in when it journals a result
        with self.outbox.journal.transaction(), self._lock:
            buffer = self._logs.get(task_id)
            if buffer is None:
                return
            if final:
                tail = buffer.decoder.decode(b"", final=True)
                if tail:
                    buffer.pending.append(tail)
                self._logs.pop(task_id, None)
            data, buffer.pending, buffer.size = "".join(buffer.pending), [], 0
            buffer.flushed_at = time.monotonic()
            parts = [data[start : start + LOG_PART_CHARS] for start in range(0, len(data), LOG_PART_CHARS)]
            self.outbox.put_logs(task_id, parts)  # under both: sequence numbers in the order written
        if parts:
            self.sender.wake()

    # ------------------------------------------------------------------ results
    def executed(self, task_id: int, *, result_hash: bytes, report: dict[str, Any],
                 outputs: Sequence[dict[str, Any]]) -> None:
        """Queue logs, then output blobs and their manifest, then the signed usage report, then `executed`
        (the daemon does this in the transaction that journals the result, and commits only once they are
        delivered, so billing has the report when the replicas reveal)."""
        self.flush_logs(task_id, final=True)
        digest = to_hex32(result_hash)
        for item in outputs:
            self.outbox.put(task_id, ReportKind.BLOB, {"sha256": item["sha256"]})
        self.outbox.put(task_id, ReportKind.OUTPUTS, {"files": list(outputs), "result_hash": digest})
        self.outbox.put(task_id, ReportKind.USAGE, report)
        self.outbox.put(task_id, ReportKind.STATUS, {"status": "executed", "result_hash": digest})
        self.sender.wake()

    def failed(self, task_id: int) -> None:
        self.flush_logs(task_id, final=True)
