"""The copycat fault is a real copier: against a FAKE marketplace that leaks the way main did before issue
12 (the explorer serving each replica's reported hash, a co-replica's logs and manifest to any assigned
provider), it learns the co-replica's hash, or rebuilds it from the manifest. The fake stands for a fault the
real API no longer has; tests/e2e/test_copycat_e2e.py runs the copycat against the real one."""

from __future__ import annotations

import json
from typing import Any

import httpx

from hashgrid.canonical import hash_document
from hashgrid.spec import parse_spec
from provider.copycat import Copycat, fallback_hash

ME, HONEST = "0x" + "1" * 40, "0x" + "2" * 40
HONEST_HASH = "0x" + "ab" * 32
MANIFEST = [{"path": "result.txt", "sha256": "cd" * 32, "size": 12}]
SPEC = parse_spec({"version": 1, "name": "t", "runtime": "wasm", "module": "ef" * 32, "replicas": 2,
                   "quorum": 2, "max_price_per_replica": "1"})


def leaky(leak_hash: bool) -> httpx.MockTransport:
    """FAKE: a marketplace with the pre-issue-12 leaks (a hash in the explorer, outputs to co-replicas)."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/explorer/tasks/7":
            replicas = [{"provider": ME, "result_hash": None},
                        {"provider": HONEST, "result_hash": HONEST_HASH if leak_hash else None}]
            return httpx.Response(200, json={"task": {}, "replicas": replicas, "events": []})
        if path == "/tasks/7":
            return httpx.Response(200, json={"replica_list": [{"provider": HONEST, "outputs": MANIFEST}]})
        if path == "/tasks/7/logs" and "follow" in str(request.url):
            chunk = json.dumps({"provider": HONEST, "seq": 0, "data": "hello"})
            return httpx.Response(200, text=f"event: log\ndata: {chunk}\n\nevent: status\ndata: {{}}\n\n")
        return httpx.Response(404, json={"code": "not_found"})

    return httpx.MockTransport(handle)


def copycat(leak_hash: bool) -> Copycat:
    transport = leaky(leak_hash)
    return Copycat(signed=httpx.Client(base_url="http://m", transport=transport),
                   anonymous=httpx.Client(base_url="http://m", transport=transport), address=ME)


def test_copycat_learns_a_leaked_hash() -> None:
    learned = copycat(leak_hash=True).learn(7, SPEC, co_providers=[HONEST], guesses=[])
    assert learned.best() == HONEST_HASH
    assert any("result_hash" in item for a in learned.attempts for item in a.learned)
    assert learned.log_text(HONEST) == "hello"


def test_copycat_rebuilds_a_hash_from_a_leaked_manifest() -> None:
    learned = copycat(leak_hash=False).learn(7, SPEC, co_providers=[HONEST], guesses=[])
    expected: dict[str, Any] = {"version": 1, "exit_code": 0, "outputs": MANIFEST}
    assert learned.best() == "0x" + hash_document(expected).hex()
    paths = {(a.method, a.path.split("?")[0], a.signed) for a in learned.attempts}
    assert ("GET", "/tasks/7/result", True) in paths and ("HEAD", f"/blobs/{'cd' * 32}", False) in paths
    assert fallback_hash(ME, 7) != bytes.fromhex(HONEST_HASH[2:])
