"""Hostile clients against the real server: `hashgrid marketplace serve` in a subprocess (uvicorn with the
guarded protocol, the Guard middleware), loaded over loopback sockets.

- 1 GB chunked bodies, streamed from a generator (never built in memory), to every POST and PUT route,
  unsigned, with a bearer token and with an EIP-712 signature header: each is refused (413, or 401/404
  before reading) and the server's resident memory (/proc/<pid>/status) grows by less than 50 MB; /health
  still answers.
- 300 sockets that never finish their request head, from another loopback address: the per-address limit
  refuses those past it, other clients are served meanwhile, and the header deadline closes the rest (408).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hashgrid.config import REPO_ROOT
from tests.marketplace.conftest_services import free_port
from tests.polling import wait_for

GIGABYTE = 1 << 30
CHUNK = b"x" * (1 << 20)
RSS_GROWTH_LIMIT = 50 * (1 << 20)
IDLE_SOCKETS = 300
PER_ADDRESS = 256
HEADER_TIMEOUT_S = 3.0
BODY_READ_TIMEOUT_S = 2.0
ZERO = "0" * 64
ADDRESS = "0x" + "11" * 20
# every POST and PUT route, path parameters filled in
WRITE_ROUTES = [
    ("POST", "/auth/siwe"),
    ("POST", "/auth/signout"),
    ("POST", "/tasks"),
    ("PUT", f"/blobs/{ZERO}"),
    ("POST", "/providers/register"),
    ("POST", f"/providers/{ADDRESS}/heartbeat"),
    ("POST", f"/providers/{ADDRESS}/assignments/1/ack"),
    ("POST", f"/providers/{ADDRESS}/tasks/1/logs"),
    ("POST", f"/providers/{ADDRESS}/tasks/1/outputs"),
    ("POST", f"/providers/{ADDRESS}/tasks/1/usage"),
    ("POST", f"/providers/{ADDRESS}/tasks/1/status"),
]
SIGNED_HEADERS = {
    "X-Hashgrid-Address": ADDRESS,
    "X-Hashgrid-Signature": "0x" + "ab" * 65,
    "X-Hashgrid-Nonce": "n" * 16,
    "X-Hashgrid-Expiry": str(int(time.time()) + 300),
}
AUTH_VARIANTS = {
    "unsigned": {},
    "bearer": {"Authorization": "Bearer hg2.00000000.AAAA.AAAA"},
    "eip712": SIGNED_HEADERS,
}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`hashgrid marketplace serve` on a free loopback port, with a short header deadline for the slow-client
    test and rate limits off (this file measures memory and sockets, not limits)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HASHGRID_STATE_DIR": str(tmp_path),
        "HASHGRID_CHAIN_ID": "31337",
        "HASHGRID_MARKETPLACE_URL": f"http://127.0.0.1:{port}",
        "HASHGRID_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "HASHGRID_BODY_READ_TIMEOUT_S": str(BODY_READ_TIMEOUT_S),
        "HASHGRID_MAX_CONNECTIONS_PER_IP": str(PER_ADDRESS),
        "HASHGRID_RATE_LIMIT_IP": "off",
        "HASHGRID_RATE_LIMIT_WALLET": "off",
        "HASHGRID_RATE_LIMIT_LOGIN": "off",
        "HASHGRID_RATE_LIMIT_READ": "off",
    }
    env.pop("HASHGRID_REDIS_URL", None)
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "hashgrid.cli", "marketplace", "serve", "--port", str(port),
         "--log-level", "warning"],
        env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None

    try:
        wait_for(healthy, timeout=60, what="the marketplace API",
                 diagnose=lambda: (tmp_path / "server.log").read_text())
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def gigabyte() -> Iterator[bytes]:
    for _ in range(GIGABYTE // len(CHUNK)):
        yield CHUNK


def test_gigabyte_bodies_leave_memory_flat(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, process = served
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(5):  # warm every route once with a small body: imports and caches are not growth
            for method, path in WRITE_ROUTES:
                client.request(method, path, content=b"{}", headers={"Content-Type": "application/json"})
        before = rss_bytes(process.pid)
        answers: dict[str, int] = {}
        for method, path in WRITE_ROUTES:
            for variant, headers in AUTH_VARIANTS.items():
                response = client.request(
                    method, path, content=gigabyte(),
                    headers={**headers, "Content-Type": "application/json"},
                )
                answers[f"{variant} {method} {path}"] = response.status_code
                assert response.status_code in (401, 404, 413, 422), (variant, method, path, response.text)
                assert response.json()["code"]  # the documented error body
        grown = rss_bytes(process.pid) - before
        assert client.get("/health").status_code == 200
    assert grown < RSS_GROWTH_LIMIT, f"server RSS grew {grown / 2**20:.1f} MiB; answers {answers}"
    # the routes that read a body refused it at their cap
    assert answers["eip712 POST /tasks"] == 413
    assert answers["unsigned POST /auth/siwe"] == 413
    assert answers["bearer POST /providers/register"] == 413  # FastAPI reads the model body before auth
    assert answers["eip712 PUT /blobs/" + ZERO] == 401  # the signature covers the blob's hash: nothing read


def test_declared_length_over_cap_is_refused_unread(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    """A Content-Length over the cap is answered before the body is sent: the client sends headers only."""
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /auth/siwe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1073741824\r\n\r\n")
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"payload_too_large" in head or b"413" in head


def _read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(HEADER_TIMEOUT_S * 10)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_stalled_body_is_answered_408_and_closed(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    """A signed POST /tasks whose body stops arriving: the route is reading it, so the guard's body timeout
    answers 408 and the connection is closed; the server serves others meanwhile."""
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    head = "".join(f"{name}: {value}\r\n" for name, value in SIGNED_HEADERS.items())
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}"
                     "Content-Length: 100\r\n\r\n{\"version\": 1".encode())
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer and b"connection: close" in answer.lower()


def test_a_request_head_over_the_cap_is_refused(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    pad = "".join(f"X-Pad-{i}: {'a' * 1024}\r\n" for i in range(70))  # 70 KiB of headers, never finished
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\n{pad}".encode())  # one write, then only reads
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def _idle_socket(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    return sock


def test_idle_sockets_do_not_starve_other_clients(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = served
    port = int(url.rsplit(":", 1)[1])
    idle = [_idle_socket(port, "127.0.0.2") for _ in range(IDLE_SOCKETS)]
    try:
        # other clients are served while the idle sockets are held
        with httpx.Client(base_url=url, timeout=HEADER_TIMEOUT_S) as client:
            for _ in range(20):
                assert client.get("/health").status_code == 200
        # past the per-address limit the server refused with 503 and closed; the first ones it holds until the
        # header deadline, then answers 408 and closes
        answers: dict[int, bytes] = {}

        def all_answered() -> bool:
            for i, sock in enumerate(idle):
                if i in answers:
                    continue
                sock.setblocking(False)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                answers[i] = data
            return len(answers) == len(idle)

        wait_for(all_answered, timeout=HEADER_TIMEOUT_S * 10, what="the idle sockets answered and closed")
        refused = [i for i, data in answers.items() if data.startswith(b"HTTP/1.1 503")]
        timed_out = [i for i, data in answers.items() if data.startswith(b"HTTP/1.1 408")]
        assert len(refused) == IDLE_SOCKETS - PER_ADDRESS, {i: answers[i][:20] for i in list(answers)[:5]}
        assert len(timed_out) == PER_ADDRESS
        with httpx.Client(base_url=url, timeout=5) as client:
            response = client.get("/health")
            assert response.status_code == 200
            assert "server" not in response.headers  # no software name and version to strangers
    finally:
        for sock in idle:
            sock.close()
