"""TEST/DEMO FAULT ONLY (`hashgrid provider run --fault copycat`): a provider that does not trust its own run
and tries to copy a co-replica's result instead. Once every other replica of its round has committed (so
their reports are all at the marketplace), it reads every path the marketplace API offers, signed and
unsigned, collects any co-replica result hash, signed usage, output manifest or log it is shown, derives a
result hash from a manifest where it gets one, and commits what it learned, else a wrong hash of its own.
Each attempt is written to <state_dir>/copycat/task-<id>.json, so a test can see what was tried and
learned. Never in production."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hashgrid.canonical import hash_document
from hashgrid.spec import TaskSpec

log = logging.getLogger(__name__)

HEX64 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
SSE_TIMEOUT_S = 10.0


@dataclass
class Attempt:
    """One read: what was asked, how it was answered, and what it gave away."""

    method: str
    path: str
    signed: bool
    status: int
    learned: list[str] = field(default_factory=list)


@dataclass
class Learned:
    """What a copycat learned about its co-replicas' results, and the hash it will commit."""

    task_id: int
    attempts: list[Attempt] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)  # co-replica result hashes seen (0x hex), with repeats
    manifests: list[list[dict[str, Any]]] = field(default_factory=list)
    logs: dict[str, dict[str, str]] = field(default_factory=dict)  # provider -> seq -> chunk
    committed: str | None = None
    source: str = ""

    def best(self) -> str | None:
        """The hash most often seen, if any."""
        return Counter(self.hashes).most_common(1)[0][0] if self.hashes else None

    def log_text(self, provider: str) -> str:
        chunks = self.logs.get(provider, {})
        return "".join(chunks[seq] for seq in sorted(chunks, key=int))

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"task-{self.task_id}.json"
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        return path


def fallback_hash(address: str, task_id: int) -> bytes:
    """The wrong hash a copycat commits when it learns nothing (never the result of a run)."""
    return hashlib.sha256(f"hashgrid fault: copycat {address.lower()} {task_id}".encode()).digest()


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


class Copycat:
    """Reads the marketplace as one provider (`signed`, its own key) and as nobody (`anonymous`)."""

    def __init__(self, *, signed: httpx.Client, anonymous: httpx.Client, address: str) -> None:
        self.signed = signed
        self.anonymous = anonymous
        self.address = address.lower()

    # ------------------------------------------------------------------ reading
    def learn(self, task_id: int, spec: TaskSpec, *, co_providers: list[str], guesses: list[str]) -> Learned:
        """Try every read path for `task_id`; `guesses` are blob hashes to probe (what a copier might guess
        an output to be)."""
        found = Learned(task_id=task_id)
        public = [f"/explorer/tasks/{task_id}", "/explorer/tasks?limit=500", "/explorer/stats",
                  "/explorer/providers?limit=500"]
        for co in co_providers:
            public += [f"/explorer/providers/{co}", f"/providers/{co}/info"]
        own = [f"/tasks/{task_id}", f"/tasks/{task_id}/result", f"/tasks/{task_id}/logs", "/tasks?limit=500",
               f"/providers/{self.address}/assignments"]
        for http, signed in ((self.signed, True), (self.anonymous, False)):
            for path in public + own:
                self._read_json(found, http, signed, path)
            self._read_sse(found, http, signed, f"/tasks/{task_id}/logs?follow=true")
        blobs = {item["sha256"] for manifest in found.manifests for item in manifest if "sha256" in item}
        for sha in sorted(blobs | set(guesses)):
            for method in ("HEAD", "GET"):
                for http, signed in ((self.signed, True), (self.anonymous, False)):
                    self._probe_blob(found, http, signed, method, sha)
        self._derive(found, spec)
        return found

    def _read_json(self, found: Learned, http: httpx.Client, signed: bool, path: str) -> None:
        try:
            response = http.get(path)
        except httpx.HTTPError as exc:
            log.debug("copycat: GET %s: %s", path, exc)
            return
        attempt = Attempt("GET", path, signed, response.status_code)
        found.attempts.append(attempt)
        if response.status_code == 200:
            with contextlib.suppress(ValueError):
                self._take(found, attempt, response.json())

    def _read_sse(self, found: Learned, http: httpx.Client, signed: bool, path: str) -> None:
        """A follow stream up to its first `status` event (after every stored chunk), then hung up."""
        chunks: list[dict[str, Any]] = []
        try:
            with http.stream("GET", path, timeout=SSE_TIMEOUT_S) as response:
                attempt = Attempt("GET", path, signed, response.status_code)
                if response.status_code == 200:
                    last = ""
                    for line in response.iter_lines():
                        if line.startswith("data: ") and last == "event: log":
                            chunks.append(json.loads(line[6:]))
                        if line.startswith("data: ") and last == "event: status":
                            break
                        last = line
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("copycat: SSE %s: %s", path, exc)
            return
        found.attempts.append(attempt)
        self._take(found, attempt, {"data": chunks})

    def _probe_blob(self, found: Learned, http: httpx.Client, signed: bool, method: str, sha: str) -> None:
        try:
            response = http.request(method, f"/blobs/{sha}")
        except httpx.HTTPError as exc:
            log.debug("copycat: %s blob %s: %s", method, sha, exc)
            return
        attempt = Attempt(method, f"/blobs/{sha}", signed, response.status_code)
        if response.status_code == 200:
            attempt.learned.append(f"blob {sha} exists" + (f" ({len(response.content)} bytes)"
                                                           if method == "GET" else ""))
        found.attempts.append(attempt)

    def _take(self, found: Learned, attempt: Attempt, body: Any) -> None:
        """Anything in a JSON answer about another provider's replica: hashes, usage, manifests, logs."""
        for item in _walk(body):
            owner = str(item.get("provider", "")).lower()
            if owner == self.address:
                continue  # its own replica: nothing to copy there
            value = item.get("result_hash")
            if isinstance(value, str) and HEX64.match(value):
                digest = "0x" + value.lower().removeprefix("0x")
                found.hashes.append(digest)
                attempt.learned.append(f"result_hash {digest}" + (f" of {owner}" if owner else ""))
            outputs = item.get("outputs")
            if isinstance(outputs, list) and outputs and all(isinstance(o, dict) for o in outputs):
                found.manifests.append(outputs)
                attempt.learned.append(f"output manifest of {owner or 'a replica'}")
            if isinstance(item.get("usage"), dict):
                attempt.learned.append(f"usage of {owner or 'a replica'}")
            if owner and isinstance(item.get("data"), str) and "seq" in item:
                found.logs.setdefault(owner, {})[str(item["seq"])] = item["data"]
                attempt.learned.append(f"logs of {owner}")

    def _derive(self, found: Learned, spec: TaskSpec) -> None:
        """A result hash rebuilt from a learned manifest (exit 0, its outputs; stdout from its logs when the
        spec counts it): the result document of docs/result-hash.md."""
        for manifest in found.manifests:
            entries = sorted(({"path": o["path"], "size": o["size"], "sha256": o["sha256"]} for o in manifest
                              if {"path", "size", "sha256"} <= o.keys()), key=lambda e: str(e["path"]))
            document: dict[str, Any] = {"version": 1, "exit_code": 0, "outputs": entries}
            if spec.include_stdout:
                if not found.logs:
                    continue
                stdout = found.log_text(next(iter(found.logs))).encode()
                document["stdout_sha256"] = hashlib.sha256(stdout).hexdigest()
            found.hashes.append("0x" + hash_document(document).hex())


def wait_for_co_replicas(*, committed: Callable[[], tuple[int, int, int, int]], wait: Callable[[float], bool],
                         margin_s: int = 15, interval_s: float = 0.5) -> bool:
    """Wait until every other replica of the round has committed (`committed()` gives round_committed,
    round_size, now, commit_deadline), or until `margin_s` before the commit deadline. False when `wait`
    says to stop (the daemon is shutting down)."""
    while True:
        done, size, now, deadline = committed()
        if done >= size - 1 or now >= deadline - margin_s:
            return True
        if wait(interval_s):
            return False
