"""Hostile input through the app (in-process): malformed bodies get a documented 4xx, never a 500; rate limits
per address and per wallet answer 429 with Retry-After, shared between replicas through a real Redis; bearer
tokens are distinct per sign-in, carry a key id (rotation) and can be signed out; CORS and security headers;
405 names every method of the path."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hashgrid.config import DEV_CHAIN_ID
from hashgrid.signing import siwe_login
from marketplace.api.app import create_app
from marketplace.api.chain import StaticFeeOracle, StaticStakeOracle
from marketplace.api.guard import Guard, Limits
from marketplace.api.ratelimit import MemoryRateLimiter
from marketplace.settings import MarketplaceSettings
from tests.marketplace import conftest_services as services
from tests.marketplace.conftest import FEE_BPS, Signer, wallet
from tests.polling import wait_for

SPEC = {
    "version": 1,
    "name": "hostile",
    "runtime": "wasm",
    "module": "ab" * 32,
    "replicas": 1,
    "quorum": 1,
    "max_price_per_replica": "1000",
    "deadline_s": 3600,
}
redis_server = services.redis_server  # a fixture
HEARTBEAT = {"free_cpus": 1, "free_memory_mb": 10}
NESTED_ARRAYS = b"[" * 1000 + b"]" * 1000
NESTED_OBJECTS = b'{"a":' * 1000 + b"1" + b"}" * 1000
BAD_BODIES = {
    "nested arrays": NESTED_ARRAYS,
    "nested objects": NESTED_OBJECTS,
    "nested in a field": json.dumps({**SPEC, "env": {"A": "x"}}).replace('"x"', "[" * 40 + "]" * 40).encode(),
    "huge integer": json.dumps(SPEC).replace('"replicas": 1', '"replicas": ' + "9" * 5000).encode(),
    "huge float": json.dumps(SPEC).replace('"replicas": 1', '"replicas": 1e999').encode(),
    "NaN": json.dumps(SPEC).replace('"replicas": 1', '"replicas": NaN').encode(),
    "invalid UTF-8": json.dumps(SPEC).replace("hostile", "\udcff", 1).encode("utf-8", "surrogateescape"),
    "lone surrogate": json.dumps(SPEC).replace("hostile", "\\ud800").encode(),
    "duplicate keys": json.dumps(SPEC)[:-1].encode() + b', "replicas": 3}',
    "not JSON": b"{spec",
    "not an object": b"[1, 2]",
}


def settings_for(tmp_path: Path, **overrides: Any) -> MarketplaceSettings:
    values: dict[str, Any] = {
        "state_dir": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'hostile.db'}",
        "chain_id": DEV_CHAIN_ID,
        "marketplace_url": "http://testserver",
        **overrides,
    }
    return MarketplaceSettings(**values)


def app_client(settings: MarketplaceSettings, engine: Engine | None = None) -> TestClient:
    stakes = StaticStakeOracle(stakes={wallet("provider-1").address.lower(): 10**21}, minimum=10**21)
    app = create_app(settings, engine=engine, stake_oracle=stakes, fee_oracle=StaticFeeOracle(FEE_BPS))
    return TestClient(app, base_url="http://testserver")


@pytest.fixture
def hostile_client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(settings_for(tmp_path)) as client:
        yield client


def assert_error_body(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "component", "retryable", "details"}, body
    if code is not None:
        assert body["code"] == code, body
    return dict(body)


# ------------------------------------------------------------------ bad input: 4xx with the error body
@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_json_is_a_422_on_every_kind_of_route(hostile_client: TestClient, name: str) -> None:
    body = BAD_BODIES[name]
    customer = Signer(hostile_client, wallet("customer"))
    provider = Signer(hostile_client, wallet("provider-1"))
    json_type = {"content-type": "application/json"}
    # the ingest route (plain Starlette, signed over the exact bytes) and a FastAPI model route
    for signer, path in ((customer, "/tasks"), (provider, f"/providers/{provider.address}/heartbeat")):
        response = signer.request("POST", path, content=body, extra=json_type)
        error = assert_error_body(response, 422, "request_invalid")
        assert error["details"]["errors"], error


def test_wrong_content_type_is_a_422(hostile_client: TestClient) -> None:
    customer = Signer(hostile_client, wallet("customer"))
    body = json.dumps(SPEC).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; x=y"):
        response = customer.request("POST", "/tasks", content=body, extra={"content-type": content_type})
        assert_error_body(response, 422, "request_invalid")
    provider = Signer(hostile_client, wallet("provider-1"))
    response = provider.request(
        "POST", f"/providers/{provider.address}/heartbeat", content=json.dumps(HEARTBEAT).encode(),
        extra={"content-type": "text/plain"},
    )
    assert_error_body(response, 422, "request_invalid")
    # the well-formed request still works
    assert customer.post("/tasks", SPEC).status_code == 201


def test_body_over_a_routes_cap_is_413(tmp_path: Path) -> None:
    with app_client(settings_for(tmp_path, max_body_bytes=4096, max_login_bytes=512)) as client:
        customer = Signer(client, wallet("customer"))
        big = json.dumps({**SPEC, "command": ["x" * 5000]}).encode()
        assert_error_body(customer.request("POST", "/tasks", content=big), 413, "payload_too_large")
        login = json.dumps({"message": "m" * 600, "signature": "0x"}).encode()
        response = client.post("/auth/siwe", content=login, headers={"content-type": "application/json"})
        assert_error_body(response, 413, "payload_too_large")
        assert response.headers["connection"] == "close"

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it is read
            yield login[:300]
            yield login[300:]

        response = client.post("/auth/siwe", content=chunked(), headers={"content-type": "application/json"})
        assert_error_body(response, 413, "payload_too_large")
        # a GET's body is never read, and a declared one over the cap is refused all the same
        assert client.request("GET", "/health", content=b"x").status_code == 200
        response = client.request("GET", "/health", content=b"x" * 5000)
        assert_error_body(response, 413, "payload_too_large")


# ------------------------------------------------------------------ rate limits
def test_wallet_and_address_rate_limits(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, rate_limit_wallet="3/60", rate_limit_ip="5/60", rate_limit_login="2/60",
                            rate_limit_read="2/60")
    with app_client(settings) as client:
        provider = Signer(client, wallet("provider-1"))
        register = {"capabilities": {}, "prices": {}}
        assert provider.post("/providers/register", register).status_code == 200
        path = f"/providers/{provider.address}/heartbeat"
        assert provider.post(path, HEARTBEAT).status_code == 200
        assert provider.post(path, HEARTBEAT).status_code == 200
        refused = provider.post(path, HEARTBEAT)
        error = assert_error_body(refused, 429, "rate_limited")
        assert error["retryable"] is True and error["details"]["limit"] == "wallet"
        assert 1 <= int(refused.headers["retry-after"]) <= 20
        # another wallet has its own budget, until the address (all one TestClient here) runs out
        other = Signer(client, wallet("customer"))
        assert other.post("/tasks", SPEC).status_code == 201
        error = assert_error_body(other.post("/tasks", SPEC), 429, "rate_limited")
        assert error["details"]["limit"] == "ip"
        # reads that are neither mutating nor expensive have a budget of their own
        assert client.get("/explorer/stats").status_code == 200
        # login: per address
        assert client.get("/auth/nonce").status_code == 200
        assert client.get("/auth/nonce").status_code == 200
        error = assert_error_body(client.get("/auth/nonce"), 429, "rate_limited")
        assert error["details"]["limit"] == "login"
        assert client.get("/explorer/tasks").status_code == 200
        error = assert_error_body(client.get("/explorer/providers"), 429, "rate_limited")
        assert error["details"]["limit"] == "read"
        assert client.get("/health").status_code == 200  # liveness is never limited


def test_rate_limits_are_shared_by_replicas_through_redis(tmp_path: Path, redis_server: Any) -> None:
    """Two API replicas (two apps, one database) with one Redis: a wallet's budget is spent across both."""
    url = redis_server.url
    first = settings_for(tmp_path, rate_limit_wallet="4/60", redis_url=url)
    second = settings_for(tmp_path, rate_limit_wallet="4/60", redis_url=url)
    with app_client(first) as a, app_client(second, engine=a.app.state.engine) as b:  # type: ignore[attr-defined]
        signers = [Signer(a, wallet("customer")), Signer(b, wallet("customer"))]
        answers = [signers[i % 2].post("/tasks", {**SPEC, "name": f"n{i}"}).status_code for i in range(5)]
        assert answers == [201, 201, 201, 201, 429]
        assert signers[1].post("/tasks", {**SPEC, "name": "late"}).status_code == 429


def test_redis_outage_falls_back_to_local_counts(tmp_path: Path) -> None:
    dead = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    with app_client(settings_for(tmp_path, rate_limit_wallet="2/60", redis_url=dead)) as client:
        customer = Signer(client, wallet("customer"))
        answers = [customer.post("/tasks", {**SPEC, "name": f"n{i}"}).status_code for i in range(3)]
        assert answers == [201, 201, 429]


# ------------------------------------------------------------------ tokens
def test_tokens_are_distinct_carry_a_key_id_and_sign_out(hostile_client: TestClient) -> None:
    key = wallet("customer")
    first = siwe_login(hostile_client, key, chain_id=DEV_CHAIN_ID)
    second = siwe_login(hostile_client, key, chain_id=DEV_CHAIN_ID)
    assert first != second
    prefix, kid, _, _ = first.split(".")
    assert prefix == "hg2" and len(kid) == 8 and second.split(".")[1] == kid

    def as_bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    assert hostile_client.get("/tasks", headers=as_bearer(first)).status_code == 200
    assert hostile_client.post("/auth/signout", headers=as_bearer(first)).status_code == 204
    signed_out = (("GET", "/tasks", None), ("POST", "/tasks", SPEC), ("POST", "/auth/signout", None))
    for method, path, body in signed_out:
        response = hostile_client.request(method, path, json=body, headers=as_bearer(first))
        assert_error_body(response, 401, "unauthorized")
    # the other sign-in is untouched
    assert hostile_client.post("/tasks", json=SPEC, headers=as_bearer(second)).status_code == 201
    # sign-out needs a bearer token, not a signature
    signer = Signer(hostile_client, key)
    assert_error_body(signer.post("/auth/signout", None), 401)


def test_rotating_the_secret_keeps_sessions_until_the_old_key_is_dropped(tmp_path: Path) -> None:
    old, new = "o" * 40, "n" * 40
    key = wallet("customer")
    with app_client(settings_for(tmp_path, auth_secret=old)) as client:
        token = siwe_login(client, key, chain_id=DEV_CHAIN_ID)
    headers = {"Authorization": f"Bearer {token}"}
    with app_client(settings_for(tmp_path, auth_secret=new, auth_previous_secrets=[old])) as client:
        assert client.get("/tasks", headers=headers).status_code == 200
        fresh = siwe_login(client, key, chain_id=DEV_CHAIN_ID)
        assert fresh.split(".")[1] != token.split(".")[1]  # new tokens name the new key
    with app_client(settings_for(tmp_path, auth_secret=new)) as client:
        assert_error_body(client.get("/tasks", headers=headers), 401, "unauthorized")
        assert client.get("/tasks", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


# ------------------------------------------------------------------ browsers, methods
def test_security_headers_and_cors(tmp_path: Path) -> None:
    origin = "https://app.hashgrid.example"
    with app_client(settings_for(tmp_path, cors_origins=[origin])) as client:
        response = client.get("/health", headers={"Origin": origin})
        assert response.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in response.headers
        for name, value in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                            ("referrer-policy", "no-referrer")):
            assert response.headers[name] == value
        assert "default-src 'none'" in response.headers["content-security-policy"]
        preflight = client.options("/tasks", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-hashgrid-signature",
        })
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        stranger = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers
        refused = client.options("/tasks", headers={"Origin": "https://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in refused.headers
    with pytest.raises(ValueError, match="CORS"):
        settings_for(tmp_path, cors_origins=["*"])


def test_method_not_allowed_names_every_method_of_the_path(hostile_client: TestClient) -> None:
    for method, path, allowed in (
        ("OPTIONS", "/tasks", "GET, POST"),
        ("DELETE", "/tasks", "GET, POST"),
        ("OPTIONS", f"/blobs/{'0' * 64}", "GET, HEAD, PUT"),
        ("PATCH", "/health", "GET"),
    ):
        response = hostile_client.request(method, path)
        assert_error_body(response, 405, "http_405")
        assert response.headers["allow"] == allowed, (method, path)


def test_a_wallet_holds_only_a_few_long_polls(tmp_path: Path) -> None:
    """Long-polls (and SSE follows) hold a connection and poll the database: past max_streams_per_wallet the
    wallet gets 429 until one ends; another wallet is not affected, and a poll that does not wait needs no
    slot."""
    settings = settings_for(tmp_path, max_streams_per_wallet=2, long_poll_max_s=30)
    with app_client(settings) as client:
        provider = Signer(client, wallet("provider-1"))
        assert provider.post("/providers/register", {"capabilities": {}, "prices": {}}).status_code == 200
        path = f"/providers/{provider.address}/assignments"
        streams = client.app.state.streams  # type: ignore[attr-defined]
        answers: list[int] = []

        def poll(wait: float) -> None:
            answers.append(provider.get(f"{path}?wait={wait}").status_code)

        held = [threading.Thread(target=poll, args=(3,)) for _ in range(2)]
        for thread in held:
            thread.start()
        wait_for(lambda: streams.open(provider.address) == 2, timeout=20, what="two long-polls held")
        error = assert_error_body(provider.get(f"{path}?wait=3"), 429, "rate_limited")
        assert error["details"]["limit"] == "streams"
        assert provider.get(f"{path}?wait=0").status_code == 200  # no wait, no slot
        for thread in held:
            thread.join(timeout=30)
        assert answers == [200, 200] and streams.open(provider.address) == 0


def test_body_timeouts_end_with_the_body() -> None:
    """The guard's body timeouts bound reading the body only: a route that then waits for the client to go
    (an SSE follow, a long-poll) waits as long as it likes. The client here is simulated (a fake, named as
    such): it sends the body, then stays past the timeouts before it disconnects."""
    limits = Limits.from_settings(MarketplaceSettings(body_read_timeout_s=0.05, body_timeout_s=0.1))
    got: list[str] = []

    async def waits_for_disconnect(scope: Any, receive: Any, send: Any) -> None:
        got.append((await receive())["type"])
        got.append((await receive())["type"])  # the SSE/long-poll wait for the client to leave
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def fake_client() -> dict[str, Any]:
        if not got:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(0.3)  # past both timeouts: elapsed time is what is under test, not a handshake
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    guard = Guard(waits_for_disconnect, limits=limits, limiter=MemoryRateLimiter())
    scope = {"type": "http", "method": "GET", "path": "/tasks/1/logs", "headers": [], "client": ("10.9", 1)}
    asyncio.run(guard(scope, fake_client, send))
    assert got == ["http.request", "http.disconnect"]
    assert sent[0]["status"] == 200
