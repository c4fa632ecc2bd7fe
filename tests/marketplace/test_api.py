"""The marketplace API against SQLite and PostgreSQL (the `db_url` fixture runs each test on both): auth,
blobs, tasks, providers, explorer; every refused request is a clear 4xx and stores nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from hashgrid.canonical import canonical_json
from hashgrid.errors import ChainError
from hashgrid.signing import sign_siwe, siwe_login
from marketplace.api.bell import Bell
from marketplace.api.chain import StaticFeeOracle
from marketplace.api.ingest import SpecIngest, SpecIngested, SpecWriter
from marketplace.models import LogChunk, Provider, Replica, ReplicaStatus, Task, TaskStatus
from tests.marketplace.conftest import FEE_BPS, Signer, row_counts, wallet

MODULE = "ab" * 32
IMAGE = "sha256:" + "cd" * 32


def spec(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": 1,
        "name": "hello",
        "runtime": "wasm",
        "module": MODULE,
        "replicas": 3,
        "quorum": 2,
        "max_price_per_replica": "1000000000000000",
    }
    document.update(overrides)
    return document


def add_task(
    engine: Engine,
    *,
    task_id: int,
    customer: str,
    providers: list[str] = (),  # type: ignore[assignment]
    status: TaskStatus = TaskStatus.ASSIGNED,
    result_hash: str | None = None,
) -> None:
    """A task and its replicas as the chain indexer writes them."""
    with Session(engine) as session:
        session.add(
            Task(
                task_id=task_id,
                spec_hash="00" * 32,
                customer=customer,
                status=status,
                replicas=3,
                quorum=2,
                max_replicas=3,
                max_price_per_replica="1",
                escrowed="3",
                deadline=2**40,
                result_hash=result_hash,
            )
        )
        session.commit()
        for provider in providers:
            session.add(Replica(task_id=task_id, provider=provider))
        session.commit()


# ------------------------------------------------------------------ auth
def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert "/tasks" in schema["paths"] and "/providers/{address}/assignments" in schema["paths"]
    # POST /tasks takes only the Request (it is also served ahead of FastAPI's router): still documented
    create = schema["paths"]["/tasks"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
    created = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert created["$ref"].endswith("TaskRegistration")


def test_unsigned_request_is_401_and_stores_nothing(client: TestClient, engine: Engine) -> None:
    before = row_counts(engine)
    response = client.post("/tasks", json=spec())
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "unauthorized" and "unsigned request" in body["message"]
    assert row_counts(engine) == before


def test_signed_request_creates_task(client: TestClient, customer: Account, engine: Engine) -> None:
    response = Signer(client, customer).post("/tasks", spec())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["customer"] == customer.address.lower()
    assert body["spec_hash"].startswith("0x") and len(body["spec_hash"]) == 66
    base = 4 * 10**15  # k = 3 and the default spare replica (max_replicas k + 1), at 10**15 each
    assert body["max_replicas"] == 4
    assert body["escrow"] == str(base + base * FEE_BPS // 10_000) and body["fee_bps"] == FEE_BPS
    again = Signer(client, customer).post("/tasks", spec())
    assert again.status_code == 200 and again.json()["created"] is False
    assert row_counts(engine)["specrecord"] == 1
    # the spec's canonical JSON is served under its hash: to its customer, and to the task's providers
    # once assigned (tests/marketplace/test_visibility.py); to nobody else
    blob = Signer(client, customer).get(f"/blobs/{body['spec_hash'][2:]}")
    assert blob.status_code == 200 and json.loads(blob.content)["module"] == MODULE
    assert Signer(client, wallet("provider-1")).get(f"/blobs/{body['spec_hash'][2:]}").status_code == 404


def test_expired_signature_is_401(client: TestClient, customer: Account, engine: Engine) -> None:
    before = row_counts(engine)
    response = Signer(client, customer).post("/tasks", spec(), expiry=int(time.time()) - 1)
    assert response.status_code == 401 and response.json()["code"] == "signature_expired"
    far = Signer(client, customer).post("/tasks", spec(), expiry=int(time.time()) + 10**6)
    assert far.status_code == 401 and "ahead" in far.json()["message"]
    assert row_counts(engine) == before


def test_replayed_nonce_is_refused(client: TestClient, customer: Account, engine: Engine) -> None:
    signer = Signer(client, customer)
    body = json.dumps(spec()).encode()
    headers = signer.headers("POST", "/tasks", body)
    headers["content-type"] = "application/json"
    assert client.post("/tasks", content=body, headers=headers).status_code == 201
    before = row_counts(engine)
    replay = client.post("/tasks", content=body, headers=headers)
    assert replay.status_code == 401 and replay.json()["code"] == "nonce_reused"
    assert row_counts(engine) == before


class _ChainDown:
    """A fee oracle whose RPC is unreachable: the fault ChainFeeOracle raises then (a named fake)."""

    def fee_bps(self) -> int:
        raise ChainError("chain call failed: connection refused (test fault)")


def _write_all(writer: SpecWriter, items: list[SpecIngest]) -> list[Any]:
    """Hand `items` to the writer at once, as concurrent requests do; the writer is closed afterwards."""

    async def write() -> list[Any]:
        return await asyncio.gather(*(writer.write(item) for item in items), return_exceptions=True)

    try:
        return asyncio.run(write())
    finally:
        writer.close()


def test_group_commit_refuses_replays_within_a_batch(
    client: TestClient, customer: Account, engine: Engine
) -> None:
    """Registrations that reach the spec writer together: a nonce used twice is refused once, a spec sent
    under several nonces is created once; a batch that fails (chain down) writes nothing. (`client` only
    migrates the database.)"""
    address, expiry = customer.address.lower(), int(time.time()) + 60
    items = [SpecIngest(address, "ab" * 32, {"name": "a"}, nonce="nonce-0000", expiry=expiry)] * 2
    items += [
        SpecIngest(address, "ab" * 32, {"name": "a"}, nonce=f"nonce-{i:04d}", expiry=expiry)
        for i in range(1, 6)
    ]
    results = _write_all(SpecWriter(engine, StaticFeeOracle(FEE_BPS)), items)
    assert [type(r).__name__ for r in results].count("NonceReused") == 1
    assert [r.created for r in results if isinstance(r, SpecIngested)].count(True) == 1
    assert row_counts(engine)["usednonce"] == 6 and row_counts(engine)["specrecord"] == 1
    before = row_counts(engine)
    down = _write_all(SpecWriter(engine, _ChainDown()), [SpecIngest(address, "cd" * 32, {}, "nonce-0100", 1)])
    assert isinstance(down[0], ChainError) and row_counts(engine) == before


def test_replayed_get_is_refused(client: TestClient, customer: Account) -> None:
    headers = Signer(client, customer).headers("GET", "/tasks")
    assert client.get("/tasks", headers=headers).status_code == 200
    assert client.get("/tasks", headers=headers).json()["code"] == "nonce_reused"


def test_wrong_chain_id_is_401(client: TestClient, customer: Account, engine: Engine) -> None:
    before = row_counts(engine)
    response = Signer(client, customer, chain_id=1).post("/tasks", spec())
    assert response.status_code == 401 and response.json()["code"] == "wrong_chain"
    # the same signature with the header claiming the right chain does not verify either
    signer = Signer(client, customer, chain_id=1)
    body = json.dumps(spec()).encode()
    headers = signer.headers("POST", "/tasks", body)
    headers["X-Hashgrid-Chain-Id"] = "31337"
    headers["content-type"] = "application/json"
    forged = client.post("/tasks", content=body, headers=headers)
    assert forged.status_code == 401 and "recovers to" in forged.json()["message"]
    assert row_counts(engine) == before


def test_tampered_body_is_401(client: TestClient, customer: Account) -> None:
    signer = Signer(client, customer)
    headers = signer.headers("POST", "/tasks", json.dumps(spec()).encode())
    headers["content-type"] = "application/json"
    response = client.post("/tasks", content=json.dumps(spec(replicas=1, quorum=1)).encode(), headers=headers)
    assert response.status_code == 401


def test_malformed_auth_headers_are_401(client: TestClient) -> None:
    bad = {
        "X-Hashgrid-Address": "0x1234",
        "X-Hashgrid-Signature": "0xzz",
        "X-Hashgrid-Nonce": "n",
        "X-Hashgrid-Expiry": "soon",
    }
    assert client.get("/tasks", headers=bad).status_code == 401
    assert client.get("/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/tasks", headers={"Authorization": "Basic abc"}).status_code == 401


def test_siwe_login_gives_a_token(client: TestClient, customer: Account) -> None:
    token = siwe_login(client, customer, chain_id=31337)
    response = client.get("/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json() == {"data": [], "count": 0}
    created = client.post("/tasks", json=spec(), headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201


def test_siwe_nonce_is_single_use_and_checked(client: TestClient, customer: Account) -> None:
    nonce = client.get("/auth/nonce").json()["nonce"]
    login = sign_siwe(customer, domain="testserver", uri="http://testserver", chain_id=31337, nonce=nonce)
    body = {"message": login.message, "signature": login.signature}
    assert client.post("/auth/siwe", json=body).status_code == 200
    assert client.post("/auth/siwe", json=body).json()["code"] == "nonce_reused"
    forged = sign_siwe(customer, domain="testserver", uri="http://testserver", chain_id=31337, nonce="a" * 42)
    assert (
        client.post("/auth/siwe", json={"message": forged.message, "signature": forged.signature}).status_code
        == 401
    )
    other_chain = sign_siwe(
        customer,
        domain="testserver",
        uri="http://testserver",
        chain_id=1,
        nonce=client.get("/auth/nonce").json()["nonce"],
    )
    response = client.post(
        "/auth/siwe", json={"message": other_chain.message, "signature": other_chain.signature}
    )
    assert response.status_code == 401 and response.json()["code"] == "wrong_chain"
    wrong_domain = sign_siwe(
        customer,
        domain="evil.example",
        uri="http://evil.example",
        chain_id=31337,
        nonce=client.get("/auth/nonce").json()["nonce"],
    )
    assert (
        client.post(
            "/auth/siwe", json={"message": wrong_domain.message, "signature": wrong_domain.signature}
        ).status_code
        == 401
    )
    assert client.post("/auth/siwe", json={"message": "hello", "signature": "0x00"}).status_code == 401


# ------------------------------------------------------------------ blobs
def test_blob_upload_download_dedupe(client: TestClient, customer: Account, engine: Engine) -> None:
    signer = Signer(client, customer)
    data = b"x" * 300_000  # several chunks
    digest = hashlib.sha256(data).hexdigest()
    first = signer.put_blob(data)
    assert first.status_code == 201 and first.json() == {"sha256": digest, "size": len(data), "created": True}
    again = signer.put_blob(data)
    assert again.status_code == 200 and again.json()["created"] is False
    # another wallet must upload the bytes to get a claim, and is not told that they were stored already
    someone = Signer(client, wallet("someone"))
    assert someone.request("HEAD", f"/blobs/{digest}").status_code == 404
    second = someone.put_blob(data)
    assert second.status_code == 201 and second.json()["created"] is True
    assert row_counts(engine)["blob"] == 1 and row_counts(engine)["blobclaim"] == 2
    head = signer.request("HEAD", f"/blobs/{digest}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert client.head(f"/blobs/{digest}").status_code == 401
    with client.stream(
        "GET", f"/blobs/{digest}", headers=signer.headers("GET", f"/blobs/{digest}")
    ) as stream:
        assert stream.status_code == 200
        assert b"".join(stream.iter_bytes()) == data
    assert signer.request("HEAD", "/blobs/" + "0" * 64).status_code == 404


def test_blob_refusals_store_nothing(
    client: TestClient, customer: Account, engine: Engine, settings: Any
) -> None:
    signer = Signer(client, customer)
    before = row_counts(engine)
    oversize = b"y" * ((1 << 20) + 1)
    too_big = signer.put_blob(oversize)
    assert too_big.status_code == 413 and too_big.json()["code"] == "payload_too_large"
    mismatch = signer.put_blob(b"hello", sha256=hashlib.sha256(b"other").hexdigest())
    assert mismatch.status_code == 400 and mismatch.json()["code"] == "digest_mismatch"
    assert client.put("/blobs/" + hashlib.sha256(b"z").hexdigest(), content=b"z").status_code == 401
    assert client.put("/blobs/NOTAHASH", content=b"z").status_code == 422
    assert row_counts(engine) == before
    store = settings.content_path
    assert not any((store / "sha256").rglob("*") if (store / "sha256").exists() else [])
    assert not any((store / "tmp").iterdir())


def test_oversize_stream_without_length_is_413(client: TestClient, customer: Account, engine: Engine) -> None:
    signer = Signer(client, customer)
    data = b"q" * ((1 << 20) + 10)
    digest = hashlib.sha256(data).hexdigest()
    headers = signer.headers("PUT", f"/blobs/{digest}", body_sha256=digest)

    def chunks() -> Any:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    response = client.put(f"/blobs/{digest}", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert row_counts(engine)["blob"] == 0


def test_output_blobs_are_private(
    client: TestClient, customer: Account, other_customer: Account, engine: Engine
) -> None:
    provider = Signer(client, wallet("provider-1"))
    add_task(engine, task_id=7, customer=customer.address.lower(), providers=[provider.address])
    data = b"result bytes"
    digest = hashlib.sha256(data).hexdigest()
    assert provider.put_blob(data).status_code == 201
    outputs = {"files": [{"path": "out.txt", "sha256": digest, "size": len(data)}]}
    assert provider.post(f"/providers/{provider.address}/tasks/7/outputs", outputs).status_code == 200
    assert provider.get(f"/blobs/{digest}").status_code == 200
    assert Signer(client, customer).get(f"/blobs/{digest}").status_code == 404  # commit phase still open
    with Session(engine) as session:
        task = session.get(Task, 7)
        assert task is not None
        task.status = TaskStatus.SETTLED
        session.add(task)
        session.commit()
    assert Signer(client, customer).get(f"/blobs/{digest}").status_code == 200
    assert Signer(client, other_customer).get(f"/blobs/{digest}").status_code == 404
    # a manifest may only name blobs its provider uploaded itself
    foreign = hashlib.sha256(b"someone else's").hexdigest()
    assert Signer(client, other_customer).put_blob(b"someone else's").status_code == 201
    claimed = {"files": [{"path": "x", "sha256": foreign, "size": 14}]}
    assert provider.post(f"/providers/{provider.address}/tasks/7/outputs", claimed).status_code == 422


# ------------------------------------------------------------------ tasks
@pytest.mark.parametrize(
    ("document", "needle"),
    [
        (spec(runtime="cobol"), "unknown runtime 'cobol'"),
        (spec(quorum=5), "quorum (5) must be at most replicas (3)"),
        (spec(runtime="docker"), "needs 'image'"),
        (spec(runtime="docker", module=None, image="ubuntu:latest", command=["x"]), "tags are not accepted"),
        (spec(resources={"cpus": 0}), "resources.cpus"),
        (spec(deadline_s=1), "deadline_s"),
        (spec(priority=1000), "priority"),
        (spec(outputs=["../etc"]), "contains '..'"),
        (spec(surprise=True), "unknown field"),
        ({"version": 1}, "name"),
    ],
)
def test_invalid_specs_are_422_with_messages(
    client: TestClient, customer: Account, engine: Engine, document: dict[str, Any], needle: str
) -> None:
    document = {k: v for k, v in document.items() if v is not None}
    before = row_counts(engine)
    response = Signer(client, customer).post("/tasks", document)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "spec_invalid" and needle in body["message"], body["message"]
    assert row_counts(engine) == before


def test_malformed_json_body_is_422(client: TestClient, customer: Account) -> None:
    response = Signer(client, customer).request(
        "POST", "/tasks", content=b"{not json", extra={"content-type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["code"] == "request_invalid"
    assert Signer(client, customer).request("POST", "/tasks", json_body=[1, 2]).status_code == 422


def test_docker_spec_accepted(client: TestClient, customer: Account) -> None:
    document = spec(runtime="docker", image=IMAGE, command=["echo", "hi"])
    del document["module"]
    assert Signer(client, customer).post("/tasks", document).status_code == 201


def test_tasks_are_private_to_their_customer(
    client: TestClient, customer: Account, other_customer: Account, engine: Engine
) -> None:
    me = customer.address.lower()
    add_task(engine, task_id=1, customer=me, providers=[wallet("provider-1").address.lower()])
    add_task(engine, task_id=2, customer=other_customer.address.lower())
    mine = Signer(client, customer).get("/tasks").json()
    assert mine["count"] == 1 and mine["data"][0]["task_id"] == 1
    detail = Signer(client, customer).get("/tasks/1").json()
    assert detail["replica_list"][0]["provider"] == wallet("provider-1").address.lower()
    theirs = Signer(client, customer).get("/tasks/2")
    assert theirs.status_code == 403 and "another customer" in theirs.json()["message"]
    assert Signer(client, customer).get("/tasks/99").status_code == 404
    assert Signer(client, customer).get("/tasks/2/logs").status_code == 403
    assert Signer(client, customer).get("/tasks/2/result").status_code == 403


def test_logs_visible_to_owner_and_assigned_providers(
    client: TestClient, customer: Account, other_customer: Account, engine: Engine
) -> None:
    provider = Signer(client, wallet("provider-1"))
    add_task(engine, task_id=3, customer=customer.address.lower(), providers=[provider.address])
    for line in ("starting\n", "done\n"):
        assert provider.post(f"/providers/{provider.address}/tasks/3/logs", {"data": line}).status_code == 200
    logs = Signer(client, customer).get("/tasks/3/logs").json()
    assert [chunk["data"] for chunk in logs["data"]] == ["starting\n", "done\n"]
    assert [chunk["seq"] for chunk in logs["data"]] == [0, 1]
    assert provider.get("/tasks/3/logs").status_code == 200
    assert Signer(client, other_customer).get("/tasks/3/logs").status_code == 403
    assert Signer(client, wallet("provider-2")).get("/tasks/3/logs").status_code == 403


def test_a_log_chunk_sent_again_with_its_seq_is_stored_once(
    client: TestClient, customer: Account, engine: Engine
) -> None:
    """The daemon resends a chunk until it hears an acknowledgement; one a restart lost must not double."""
    provider = Signer(client, wallet("provider-1"))
    add_task(engine, task_id=5, customer=customer.address.lower(), providers=[provider.address])
    for seq, line in ((0, "one\n"), (1, "two\n"), (1, "two\n"), (0, "one\n"), (2, "three\n")):
        answer = provider.post(f"/providers/{provider.address}/tasks/5/logs", {"data": line, "seq": seq})
        assert answer.status_code == 200, answer.text
    logs = Signer(client, customer).get("/tasks/5/logs").json()
    assert [(chunk["seq"], chunk["data"]) for chunk in logs["data"]] == [(0, "one\n"), (1, "two\n"),
                                                                         (2, "three\n")]


def test_logs_follow_streams_sse_until_final(client: TestClient, customer: Account, engine: Engine) -> None:
    add_task(engine, task_id=4, customer=customer.address.lower(), status=TaskStatus.SETTLED)
    with Session(engine) as session:
        session.add(LogChunk(task_id=4, provider="0x" + "1" * 40, seq=0, data="hello\n"))
        session.commit()
    headers = Signer(client, customer).headers("GET", "/tasks/4/logs?follow=true")
    with client.stream("GET", "/tasks/4/logs?follow=true", headers=headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    assert "event: log" in text and "hello" in text and "event: status" in text and "event: end" in text
    # the stream gave back its slot (guard.StreamSlots): a wallet may follow again
    assert client.app.state.streams.open(customer.address.lower()) == 0  # type: ignore[attr-defined]


def test_result_of_settled_task(client: TestClient, customer: Account, engine: Engine) -> None:
    provider = wallet("provider-1").address.lower()
    add_task(engine, task_id=5, customer=customer.address.lower(), providers=[provider])
    assert Signer(client, customer).get("/tasks/5/result").status_code == 409
    result_hash = "0x" + "ee" * 32
    with Session(engine) as session:
        task = session.get(Task, 5)
        assert task is not None
        task.result_hash, task.status = result_hash, TaskStatus.SETTLED
        replica = session.get(Replica, 1) or next(iter(session.query(Replica).all()))  # type: ignore[attr-defined]
        replica.status, replica.result_hash = ReplicaStatus.AGREED, result_hash
        replica.outputs = [{"path": "out.txt", "sha256": "ab" * 32, "size": 3}]
        session.add_all([task, replica])
        session.commit()
    body = Signer(client, customer).get("/tasks/5/result").json()
    assert body["result_hash"] == result_hash and body["agreeing"] == [provider]
    assert body["outputs"][0]["path"] == "out.txt"


# ------------------------------------------------------------------ providers
def register_body() -> dict[str, Any]:
    return {
        "capabilities": {
            "version": 1,
            "cpu": {"arch": "x86_64", "cores": 2, "threads": 2, "model": "x"},
            "mem": {"total_mb": 4096, "available_mb": 3000},
            "storage": {"path": "/w", "total_mb": 100, "free_mb": 50},
            "os": {"name": "Debian", "version": "12", "kernel": "6"},
            "gpus": [],
            "runtimes": ["docker", "wasm"],
        },
        "prices": {"fixed": "1000", "per_cpu_second": "10"},
        "policy": {"runtimes": ["wasm"]},
        "offer": {"cores": 2, "memory_mb": 2048},
    }


def test_provider_register_heartbeat_info(client: TestClient, engine: Engine) -> None:
    provider = Signer(client, wallet("provider-1"))
    response = provider.post("/providers/register", register_body())
    assert response.status_code == 200, response.text
    assert response.json()["runtimes"] == ["wasm"] and response.json()["online"] is True
    beat = provider.post(
        f"/providers/{provider.address}/heartbeat", {"free_cpus": 1.5, "free_memory_mb": 1024, "running": 1}
    )
    assert beat.status_code == 200
    with Session(engine) as session:
        row = session.get(Provider, provider.address)
        assert row is not None and row.free_cpus == 1.5 and row.running == 1
    info = client.get(f"/providers/{provider.address}/info").json()
    assert info["device"]["os"]["name"] == "Debian"
    assert client.get(f"/providers/{provider.address}/info/cpu").json()["cores"] == 2
    assert client.get(f"/providers/{provider.address}/info/gpu").json() == []
    assert client.get(f"/providers/{provider.address}/info/disk").status_code == 422
    assert client.get(f"/providers/0x{'9' * 40}/info").status_code == 404
    stats = client.get("/explorer/stats").json()
    assert stats["providers_online"] == 1 and stats["capacity"]["cpus"] == 2.0


def test_a_provider_under_the_minimum_stake_is_not_online(client: TestClient, engine: Engine) -> None:
    """Slashed or unstaked under the minimum (the indexer updates the stake), a provider that still beats is
    not counted online anywhere (provider info, explorer list, stats), so estimates do not count it."""
    provider = Signer(client, wallet("provider-2"))
    assert provider.post("/providers/register", register_body()).status_code == 200
    listed = client.get("/explorer/providers").json()["data"]
    mine = [(p["online"], p["eligible"]) for p in listed if p["address"] == provider.address]
    assert mine == [(True, True)]
    with Session(engine) as session:
        row = session.get(Provider, provider.address)
        assert row is not None
        row.stake = str(int(row.stake) // 2)  # what a slash of half the stake leaves (below MIN_STAKE)
        session.add(row)
        session.commit()
    beat = provider.post(f"/providers/{provider.address}/heartbeat",
                         {"free_cpus": 2, "free_memory_mb": 2048, "running": 0})
    assert beat.status_code == 200  # it still beats ...
    info = client.get(f"/providers/{provider.address}/info").json()["provider"]
    assert (info["online"], info["eligible"]) == (False, False)  # ... but is not online for work
    listed = client.get("/explorer/providers").json()["data"]
    mine = [(p["online"], p["eligible"]) for p in listed if p["address"] == provider.address]
    assert mine == [(False, False)]
    assert client.get("/explorer/stats").json()["providers_online"] == 0


def test_unstaked_provider_is_refused(client: TestClient, engine: Engine) -> None:
    before = row_counts(engine)
    response = Signer(client, wallet("unstaked")).post("/providers/register", register_body())
    assert response.status_code == 403 and response.json()["code"] == "provider_stake_too_low"
    assert row_counts(engine) == before


def test_provider_cannot_act_for_another(client: TestClient, engine: Engine) -> None:
    mallory = Signer(client, wallet("provider-2"))
    victim = wallet("provider-1").address.lower()
    assert (
        Signer(client, wallet("provider-1")).post("/providers/register", register_body()).status_code == 200
    )
    before = row_counts(engine)
    response = mallory.post(f"/providers/{victim}/heartbeat", {"free_cpus": 0, "free_memory_mb": 0})
    assert response.status_code == 403
    assert row_counts(engine) == before


def test_reporting_for_unassigned_task_is_403(client: TestClient, customer: Account, engine: Engine) -> None:
    provider = Signer(client, wallet("provider-2"))
    add_task(
        engine, task_id=8, customer=customer.address.lower(), providers=[wallet("provider-1").address.lower()]
    )
    before = row_counts(engine)
    base = f"/providers/{provider.address}/tasks/8"
    for suffix, body in (
        ("logs", {"data": "x"}),
        ("outputs", {"files": []}),
        ("status", {"status": "running"}),
        ("usage", {"report": {}, "signature": "0x" + "1" * 130}),
    ):
        response = provider.post(f"{base}/{suffix}", body)
        assert response.status_code in (400, 403), (suffix, response.text)
        if suffix != "usage":
            assert response.json()["code"] == "not_assigned"
    assert row_counts(engine) == before


def test_assignments_long_poll_and_ack(client: TestClient, customer: Account, engine: Engine) -> None:
    provider = Signer(client, wallet("provider-1"))
    empty = provider.get(f"/providers/{provider.address}/assignments?wait=0").json()
    assert empty == {"data": [], "count": 0}
    add_task(engine, task_id=9, customer=customer.address.lower(), providers=[provider.address])
    found = provider.get(f"/providers/{provider.address}/assignments?wait=5").json()
    assert found["count"] == 1 and found["data"][0]["task_id"] == 9
    assert provider.post(f"/providers/{provider.address}/assignments/9/ack").status_code == 200
    assert provider.get(f"/providers/{provider.address}/assignments").json()["count"] == 0
    other = Signer(client, wallet("provider-2"))
    assert other.get(f"/providers/{provider.address}/assignments").status_code == 403


def test_bell_wakes_a_long_poll_at_once() -> None:
    """The in-process matcher rings from its thread; a waiting long-poll returns well before its timeout,
    and a ring between reading `rings` and waiting is not lost."""
    bell = Bell()

    async def scenario() -> None:
        before = bell.rings
        bell.ring()
        await asyncio.wait_for(bell.wait(30, since=before), 5)
        waiter = asyncio.create_task(bell.wait(30, since=bell.rings))
        await asyncio.sleep(0)  # one loop turn so the waiter registers (a yield, not a delay)
        threading.Thread(target=bell.ring).start()
        await asyncio.wait_for(waiter, 5)

    asyncio.run(scenario())


def test_signed_usage_and_status(client: TestClient, customer: Account, engine: Engine) -> None:
    key = wallet("provider-1")
    provider = Signer(client, key)
    add_task(engine, task_id=10, customer=customer.address.lower(), providers=[provider.address])
    document = {
        "task_id": 10,
        "provider": provider.address,
        "usage": {"cpu_seconds": 1.5, "wall_seconds": 2},
        "result_hash": "0x" + "aa" * 32,
    }
    signature = "0x" + Account.sign_message(
        encode_defunct(primitive=canonical_json(document)), key.key
    ).signature.hex().removeprefix("0x")
    base = f"/providers/{provider.address}/tasks/10"
    assert provider.post(f"{base}/status", {"status": "running"}).status_code == 200
    forged = provider.post(
        f"{base}/usage", {"report": document | {"usage": {"cpu_seconds": 99}}, "signature": signature}
    )
    assert forged.status_code == 403
    assert provider.post(f"{base}/usage", {"report": document, "signature": signature}).status_code == 200
    with Session(engine) as session:
        replica = session.get(Replica, 1)
        assert replica is not None and replica.status == ReplicaStatus.EXECUTED
        assert replica.usage == document
    refused = provider.post(f"{base}/status", {"status": "refused"})
    assert refused.status_code == 422


# ------------------------------------------------------------------ explorer
def test_explorer_is_public_and_empty_until_indexed(client: TestClient) -> None:
    assert client.get("/explorer/tasks").json() == {"data": [], "count": 0}
    assert client.get("/explorer/providers").json() == {"data": [], "count": 0}
    stats = client.get("/explorer/stats").json()
    assert stats["providers_online"] == 0 and stats["tasks_by_state"]["posted"] == 0
    assert client.get("/explorer/tasks/1").status_code == 404
    ledger = client.get(f"/explorer/providers/0x{'1' * 40}").json()
    assert ledger["rewards"] == [] and ledger["total_rewards"] == "0"


def test_explorer_shows_indexed_tasks(client: TestClient, customer: Account, engine: Engine) -> None:
    add_task(engine, task_id=11, customer=customer.address.lower(), status=TaskStatus.POSTED)
    assert client.get("/explorer/tasks?status=posted").json()["count"] == 1
    assert client.get("/explorer/tasks/11").json()["task"]["task_id"] == 11
    assert client.get("/explorer/stats").json()["tasks_by_state"]["posted"] == 1
