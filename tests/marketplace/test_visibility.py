"""Who may see what, and when: every read route of the API (served by uvicorn on a loopback port, on SQLite
and PostgreSQL) × {customer, own provider, co-assigned provider, stranger, unauthenticated} × {commit phase
open, commit phase closed, finalized}. Two providers report everything a replica has (logs, output blobs,
signed usage, result hash) through the provider routes; the chain's side comes in as events through the
indexer's own `ingest`. Each secret is a marker that can be searched for in what a reader gets back."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from hashgrid.config import DEV_CHAIN_ID
from hashgrid.signing import HashgridAuth
from marketplace.api.app import create_app
from marketplace.api.chain import StaticFeeOracle, StaticStakeOracle
from marketplace.api.services.visibility import commit_closed
from marketplace.indexer.apply import ingest
from marketplace.indexer.events import DecodedEvent
from marketplace.models import Replica as ReplicaRow
from marketplace.models import ReplicaStatus, Task, TaskStatus
from marketplace.settings import MarketplaceSettings
from provider.daemon import usage_report
from tests.marketplace.conftest import FEE_BPS, Signer, wallet
from tests.marketplace.conftest_services import free_port
from tests.marketplace.test_api import register_body
from tests.polling import wait_for

TASK = 1
KINDS = ("hash", "usage", "log", "output", "size", "sha")
VIEWERS = ("customer", "own", "co", "stranger", "anonymous")


@pytest.fixture
def live_url(settings: MarketplaceSettings, engine: Engine, stakes: StaticStakeOracle) -> Iterator[str]:
    """The app served by uvicorn in a thread of this process, on a free loopback port."""
    app = create_app(settings, engine=engine, stake_oracle=stakes, fee_oracle=StaticFeeOracle(FEE_BPS))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="uvicorn serving the app")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive(), "uvicorn did not stop"


@dataclass
class Replica:
    """One provider's replica and the markers of everything it reports."""

    account: LocalAccount
    tag: str
    size: int

    @property
    def address(self) -> str:
        return self.account.address.lower()

    @property
    def output(self) -> bytes:
        marker = f"OUTPUT-OF-{self.tag}-".encode()
        return marker + b"." * (self.size - len(marker))

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.output).hexdigest()

    @property
    def result_hash(self) -> str:
        return hashlib.sha256(f"result of {self.tag}".encode()).hexdigest()

    @property
    def usage_marker(self) -> str:
        return {"A": "0.918273645", "B": "0.564738291"}[self.tag]

    @property
    def log_line(self) -> str:
        return f"log-line-of-{self.tag}"

    def markers(self) -> dict[str, str]:
        return {"hash": self.result_hash, "usage": self.usage_marker, "log": self.log_line,
                "output": f"OUTPUT-OF-{self.tag}-", "size": str(self.size), "sha": self.sha}


def client(url: str, account: LocalAccount | None) -> httpx.Client:
    auth = HashgridAuth(account, chain_id=DEV_CHAIN_ID) if account is not None else None
    return httpx.Client(base_url=url, auth=auth, timeout=30)


def event(name: str, block: int, index: int, **args: Any) -> DecodedEvent:
    return DecodedEvent(contract="TaskEscrow", name=name, args={"taskId": TASK, **args}, block_number=block,
                        block_hash="0x" + f"{block:064x}", tx_hash="0x" + f"{block * 100 + index:064x}",
                        log_index=index)


def index(engine: Engine, events: list[DecodedEvent]) -> None:
    with Session(engine) as session:
        ingest(session, events)
        session.commit()


def report(url: str, replica: Replica) -> None:
    """Everything a daemon reports for its replica, through the provider routes."""
    with client(url, replica.account) as http:
        base = f"/providers/{replica.address}/tasks/{TASK}"
        assert http.post(f"{base}/status", json={"status": "running"}).status_code == 200
        assert http.post(f"{base}/logs", json={"data": replica.log_line + "\n"}).status_code == 200
        put = http.put(f"/blobs/{replica.sha}", content=replica.output,
                       headers={"content-type": "application/octet-stream"})
        assert put.status_code == 201, put.text
        manifest = {"files": [{"path": "out.txt", "sha256": replica.sha, "size": replica.size}],
                    "result_hash": replica.result_hash}
        assert http.post(f"{base}/outputs", json=manifest).status_code == 200
        signed = usage_report("0x" + replica.account.key.hex().removeprefix("0x"), task_id=TASK,
                              provider=replica.address, usage={"cpu_seconds": float(replica.usage_marker)},
                              result_hash=bytes.fromhex(replica.result_hash))
        assert http.post(f"{base}/usage", json=signed).status_code == 200
        assert http.post(f"{base}/status", json={"status": "executed"}).status_code == 200


def read_sse(http: httpx.Client, path: str) -> httpx.Response | tuple[int, str, dict[str, str]]:
    """A follow stream read up to its first `status` event (which comes after every chunk already stored),
    then closed: the stream itself only ends with the task."""
    with http.stream("GET", path) as response:
        if response.status_code != 200:
            response.read()
            return response
        seen: list[str] = []
        for line in response.iter_lines():
            seen.append(line)
            if seen[-2:-1] == ["event: status"]:
                break
        return response.status_code, "\n".join(seen), dict(response.headers)


def gather(url: str, account: LocalAccount | None, blobs: list[str], a: Replica, b: Replica
           ) -> tuple[str, dict[str, int]]:
    """What a reader gets back from every read route (bodies and size/tag headers of successful answers),
    and the status of each blob route (for the existence check)."""
    paths = ["/explorer/tasks", f"/explorer/tasks/{TASK}", "/explorer/stats", "/explorer/providers",
             "/explorer/tasks?status=running", "/health"]
    for replica in (a, b):
        paths += [f"/explorer/providers/{replica.address}", f"/providers/{replica.address}/info",
                  f"/providers/{replica.address}/info/cpu", f"/providers/{replica.address}/assignments"]
    paths += ["/tasks", f"/tasks/{TASK}", f"/tasks/{TASK}/logs", f"/tasks/{TASK}/result"]
    seen: list[str] = []
    blob_status: dict[str, int] = {}
    with client(url, account) as http:
        answers: list[httpx.Response | tuple[int, str, dict[str, str]]] = [http.get(p) for p in paths]
        answers.append(read_sse(http, f"/tasks/{TASK}/logs?follow=true"))
        for sha in blobs:
            for method in ("GET", "HEAD"):
                response = http.request(method, f"/blobs/{sha}")
                blob_status[f"{method} {sha}"] = response.status_code
                answers.append(response)
    for answer in answers:
        status, text, headers = ((answer.status_code, answer.text, dict(answer.headers))
                                 if isinstance(answer, httpx.Response) else answer)
        if status < 400:  # an error answer only repeats what was asked (a hash, a task id)
            seen.append(text)
            seen += [f"{k}: {v}" for k, v in headers.items() if k in ("content-length", "etag")]
    return "\n".join(seen).lower(), blob_status


def visible(haystack: str, replicas: list[Replica]) -> set[str]:
    return {f"{r.tag}:{kind}" for r in replicas for kind, marker in r.markers().items()
            if marker.lower() in haystack}


def everything(tag: str) -> set[str]:
    return {f"{tag}:{kind}" for kind in KINDS}


OWN = {"A:log", "A:output", "A:size", "A:sha"}  # A's own blob (ETag, Content-Length) and logs
CO = {"B:log", "B:output", "B:size", "B:sha"}
REVEALED = {"A:hash", "B:hash"}  # on chain once revealed: the public's
EXPECTED: dict[str, dict[str, set[str]]] = {
    "open": {"customer": {"A:log", "B:log"}, "own": OWN, "co": CO, "stranger": set(), "anonymous": set()},
    "closed": {"customer": everything("A") | everything("B"), "own": OWN, "co": CO, "stranger": set(),
               "anonymous": set()},
    "final": {"customer": everything("A") | everything("B"), "own": OWN | REVEALED, "co": CO | REVEALED,
              "stranger": REVEALED, "anonymous": REVEALED},
}


def test_nothing_to_copy_before_the_commit_phase_closes(live_url: str, engine: Engine) -> None:
    customer, stranger = wallet("customer"), wallet("stranger")
    a, b = Replica(wallet("provider-1"), "A", 313_373), Replica(wallet("provider-2"), "B", 271_829)
    never_stored = hashlib.sha256(b"never stored").hexdigest()
    with client(live_url, customer) as http:
        module, data = b"\0asm module bytes", b"input data"
        for blob in (module, data):
            assert http.put(f"/blobs/{hashlib.sha256(blob).hexdigest()}", content=blob).status_code == 201
        inputs = [{"path": "data.txt", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}]
        spec = {"version": 1, "name": "visibility", "runtime": "wasm", "inputs": inputs, "replicas": 2,
                "module": hashlib.sha256(module).hexdigest(), "quorum": 2, "max_price_per_replica": "1000"}
        registered = http.post("/tasks", json=spec)
        assert registered.status_code == 201, registered.text
    spec_hash = registered.json()["spec_hash"]
    for replica in (a, b):
        with client(live_url, replica.account) as http:
            assert http.post("/providers/register", json=register_body()).status_code == 200
    index(engine, [
        event("TaskPosted", 10, 0, customer=customer.address.lower(), specHash=spec_hash, replicas=2,
              quorum=2, maxReplicas=2, maxPricePerReplica="1000", escrowed="2050", deadline=2**39),
        event("TaskAssigned", 11, 0, provider=a.address), event("TaskAssigned", 11, 1, provider=b.address),
        event("RoundOpened", 11, 2, assigned=2, commitDeadline=2**38, revealDeadline=2**38 + 60),
    ])
    report(live_url, a)
    report(live_url, b)
    index(engine, [event("ResultCommitted", 12, 0, provider=a.address, commitment="0x" + "c1" * 32)])
    viewers = {"customer": customer, "own": a.account, "co": b.account, "stranger": stranger,
               "anonymous": None}
    blobs = [a.sha, b.sha, never_stored]

    def check(phase: str) -> None:
        for viewer in VIEWERS:
            haystack, statuses = gather(live_url, viewers[viewer], blobs, a, b)
            assert visible(haystack, [a, b]) == EXPECTED[phase][viewer], (phase, viewer)
            for method in ("GET", "HEAD"):  # a blob the reader may not read answers as a missing one
                missing = statuses[f"{method} {never_stored}"]
                for sha in (a.sha, b.sha):
                    assert statuses[f"{method} {sha}"] in (200, missing), (phase, viewer, method, sha)

    check("open")
    index(engine, [event("ResultCommitted", 13, 0, provider=b.address, commitment="0x" + "c2" * 32)])
    check("closed")
    index(engine, [
        event("ResultRevealed", 14, 0, provider=a.address, resultHash="0x" + a.result_hash),
        event("ResultRevealed", 14, 1, provider=b.address, resultHash="0x" + b.result_hash),
        event("TaskSettled", 15, 0, resultHash="0x" + a.result_hash, agreeing=1, paid="1000", fee="25",
              refunded="1025"),
        event("ReplicaFinalized", 15, 1, provider=a.address, outcome=4, paid="1000"),
        event("ReplicaFinalized", 15, 2, provider=b.address, outcome=5, paid="0"),
    ])
    check("final")


def test_blob_claims_spec_and_inputs(client: TestClient, engine: Engine) -> None:
    """A spec and its inputs: its customer always, its providers while assigned, nobody else; naming another
    wallet's blob in a spec gives neither the customer nor its (sybil) providers a claim to it; an upload is
    its uploader's alone until linked."""
    customer, victim, attacker = (Signer(client, wallet(n)) for n in ("customer", "victim", "attacker"))
    worker, sybil, stranger = (Signer(client, wallet(f"provider-{i}")) for i in (1, 2, 3))
    module, data, private = b"\0asm module", b"input data", b"the victim's private input"
    sha = {name: hashlib.sha256(blob).hexdigest() for name, blob in
           (("module", module), ("data", data), ("private", private))}
    assert customer.put_blob(module).status_code == 201 and customer.put_blob(data).status_code == 201
    assert victim.put_blob(private).status_code == 201

    def register(signer: Signer, input_sha: str) -> str:
        document = {"version": 1, "name": "claims", "runtime": "wasm", "module": sha["module"],
                    "inputs": [{"path": "in.txt", "sha256": input_sha, "size": 1}], "replicas": 1,
                    "quorum": 1, "max_price_per_replica": "1000"}
        response = signer.post("/tasks", document)
        assert response.status_code == 201, response.text
        return str(response.json()["spec_hash"]).removeprefix("0x")

    spec, stolen_spec = register(customer, sha["data"]), register(attacker, sha["private"])

    def post(task_id: int, owner: Signer, spec_hash: str, provider: Signer) -> None:
        with Session(engine) as session:
            session.add(Task(task_id=task_id, spec_hash=spec_hash, customer=owner.address, replicas=1,
                             quorum=1, max_replicas=1, max_price_per_replica="1000", escrowed="1025",
                             deadline=2**39, status=TaskStatus.ASSIGNED))
            session.commit()
            session.add(ReplicaRow(task_id=task_id, provider=provider.address))
            session.commit()

    def readers(digest: str) -> set[str]:
        signers = {"customer": customer, "victim": victim, "attacker": attacker, "worker": worker,
                   "sybil": sybil, "stranger": stranger}
        return {name for name, signer in signers.items() if signer.get(f"/blobs/{digest}").status_code == 200}

    assert readers(spec) == {"customer"} and readers(sha["data"]) == {"customer"}
    post(1, customer, spec, worker)
    post(2, attacker, stolen_spec, sybil)
    for digest in (spec, sha["data"], sha["module"]):
        assert readers(digest) == {"customer", "worker"}, digest
    assert readers(sha["private"]) == {"victim"}  # the attacker's spec names it: no claim for its sybil
    assert readers(stolen_spec) == {"attacker", "sybil"}
    output = b"an output not yet linked to any task"
    assert worker.put_blob(output).status_code == 201
    assert readers(hashlib.sha256(output).hexdigest()) == {"worker"}
    with Session(engine) as session:  # the task is over: its provider no longer reads its spec and inputs
        task = session.get(Task, 1)
        assert task is not None
        task.status = TaskStatus.SETTLED
        session.add(task)
        session.commit()
    assert readers(spec) == {"customer"} and readers(sha["data"]) == {"customer"}


def _replica(provider: str, round_: int, status: ReplicaStatus = ReplicaStatus.ASSIGNED,
             commitment: str | None = None) -> ReplicaRow:
    return ReplicaRow(task_id=TASK, provider=provider, round=round_, status=status, commitment=commitment)


def test_commit_phase_closes_only_on_chain_evidence() -> None:
    """The gate itself, round by round: reports never open it; the current round's commits, a reveal in it or
    the task's end do; a new round (escalation) shuts it again."""
    task = Task(task_id=TASK, spec_hash="00" * 32, customer="0x" + "c" * 40, replicas=2, quorum=2,
                max_replicas=3, max_price_per_replica="1", escrowed="3", deadline=2**39,
                status=TaskStatus.ASSIGNED)
    a, b, c = ("0x" + d * 40 for d in "abc")
    executed = [_replica(a, 1, ReplicaStatus.EXECUTED), _replica(b, 1, ReplicaStatus.COMMITTED, "0x1")]
    assert not commit_closed(task=task, replicas=executed)
    committed = [_replica(a, 1, ReplicaStatus.COMMITTED, "0x2"),
                 _replica(b, 1, ReplicaStatus.COMMITTED, "0x1")]
    assert commit_closed(task=task, replicas=committed)
    one_revealed = [_replica(a, 1, ReplicaStatus.ASSIGNED), _replica(b, 1, ReplicaStatus.REVEALED, "0x1")]
    assert commit_closed(task=task, replicas=one_revealed)  # a reveal: the deadline passed on chain
    escalated = [_replica(a, 1, ReplicaStatus.REVEALED, "0x2"), _replica(b, 1, ReplicaStatus.REVEALED, "0x1"),
                 _replica(c, 2, ReplicaStatus.EXECUTED)]
    assert not commit_closed(task=task, replicas=escalated)
    escalated[2] = _replica(c, 2, ReplicaStatus.COMMITTED, "0x3")
    assert commit_closed(task=task, replicas=escalated)
    assert not commit_closed(task=task, replicas=[])
    for final in (TaskStatus.SETTLED, TaskStatus.FAILED, TaskStatus.EXPIRED, TaskStatus.CANCELLED):
        assert commit_closed(task=task.model_copy(update={"status": final}), replicas=executed)
