"""`python -m bench.api`: signed task creations per second through the real HTTP stack.

uvicorn serves the marketplace on 127.0.0.1 in a subprocess (SQLite in a temp dir); load comes from another
process: a lean asyncio HTTP/1.1 client over keep-alive connections, replaying POST /tasks requests that were
EIP-712 signed ahead of time (each a distinct spec and nonce), with unsigned GET /health as the baseline in
the same run. Prints throughput and p50/p99 latency, an in-process cost breakdown of one creation, and
writes the "API" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
CHAIN_ID = 31337
TARGET = 1000.0
FEE_BPS = 250


def make_app() -> Any:
    """The app the server subprocess runs: settings from the environment, fixed fee (no chain needed)."""
    from marketplace.api.app import create_app
    from marketplace.api.chain import StaticFeeOracle, StaticStakeOracle
    from marketplace.settings import MarketplaceSettings

    return create_app(
        MarketplaceSettings(), stake_oracle=StaticStakeOracle(), fee_oracle=StaticFeeOracle(FEE_BPS)
    )


def spec_document(i: int) -> dict[str, Any]:
    return {
        "version": 1,
        "name": f"bench-{i}",
        "runtime": "wasm",
        "module": "ab" * 32,
        "replicas": 3,
        "quorum": 2,
        "max_price_per_replica": "1000000000000000",
        "deadline_s": 3600,
    }


def _sign_batch(args: tuple[int, int, str, int]) -> list[bytes]:
    """Raw HTTP requests for specs start..stop, signed by `key` (run in worker processes: signing is slow)."""
    start, stop, key, port = args
    from eth_account import Account

    from hashgrid.signing import sign_request

    account = Account.from_key(key)
    out = []
    for i in range(start, stop):
        body = json.dumps(spec_document(i), separators=(",", ":")).encode()
        headers = sign_request(
            account,
            method="POST",
            url=f"http://127.0.0.1:{port}/tasks",
            body=body,
            chain_id=CHAIN_ID,
            ttl_s=590,
        )
        lines = [
            "POST /tasks HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ] + [f"{name}: {value}" for name, value in headers.items()]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return out


def health_request(port: int) -> bytes:
    return f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def _one_connection(
    port: int,
    requests: list[bytes],
    latencies: list[float],
    statuses: dict[int, int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for raw in requests:
            started = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def _load(args: tuple[int, list[bytes], int]) -> dict[str, Any]:
    """Send `requests` over `connections` keep-alive connections (the load process's whole job)."""
    port, requests, connections = args
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def run() -> float:
        shares = [requests[i::connections] for i in range(connections)]
        started = time.perf_counter()
        await asyncio.gather(*(_one_connection(port, share, latencies, statuses) for share in shares))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    return {"elapsed": elapsed, "latencies": latencies, "statuses": statuses}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(health_request(port))
                if b" 200 " in sock.recv(256):
                    return
        except OSError:
            pass
        time.sleep(0.1)  # polling a subprocess's port: there is no readiness signal to wait on
    raise RuntimeError("uvicorn did not become ready")


def summarise(name: str, result: dict[str, Any], count: int) -> dict[str, Any]:
    lat = sorted(result["latencies"])
    ok = sum(n for status, n in result["statuses"].items() if 200 <= status < 300)
    return {
        "name": name,
        "requests": count,
        "ok": ok,
        "statuses": result["statuses"],
        "rate": ok / result["elapsed"],
        "p50": 1000 * statistics.median(lat),
        "p99": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def breakdown(state_dir: Path, samples: int = 2000) -> dict[str, float]:
    """Microseconds per creation spent in each step, measured in-process on one core."""
    from eth_account import Account
    from sqlmodel import Session

    from hashgrid.canonical import canonical_json
    from hashgrid.signing import request_digest, sign_request
    from hashgrid.spec import parse_spec
    from hashgrid.spec import spec_document as spec_doc
    from marketplace.api.chain import StaticFeeOracle
    from marketplace.api.security import consume_nonce, verify_signed_request
    from marketplace.api.services.tasks import register_spec
    from marketplace.db import init_db, make_engine

    account = Account.from_key(hashlib.sha256(b"bench-breakdown").digest())
    engine = make_engine(f"sqlite:///{state_dir / 'breakdown.db'}")
    init_db(engine)
    bodies = [json.dumps(spec_document(10**6 + i)).encode() for i in range(samples)]
    signed = [
        sign_request(account, method="POST", url="http://x/tasks", body=b, chain_id=CHAIN_ID, ttl_s=590)
        for b in bodies
    ]
    now = int(time.time())
    timings: dict[str, float] = {}

    def clock(name: str, fn: Any) -> None:
        started = time.perf_counter()
        for i in range(samples):
            fn(i)
        timings[name] = 1e6 * (time.perf_counter() - started) / samples

    clock(
        "body sha256 + EIP-712 digest",
        lambda i: request_digest(
            method="POST",
            path="/tasks",
            body_sha256=hashlib.sha256(bodies[i]).hexdigest(),
            chain_id=CHAIN_ID,
            nonce=signed[i]["X-Hashgrid-Nonce"],
            expiry=int(signed[i]["X-Hashgrid-Expiry"]),
        ),
    )
    clock(
        "digest + signature recovery (coincurve)",
        lambda i: verify_signed_request(
            address=signed[i]["X-Hashgrid-Address"],
            signature=signed[i]["X-Hashgrid-Signature"],
            nonce=signed[i]["X-Hashgrid-Nonce"],
            expiry=signed[i]["X-Hashgrid-Expiry"],
            chain_id_header=None,
            method="POST",
            path="/tasks",
            body_sha256=hashlib.sha256(bodies[i]).hexdigest(),
            chain_id=CHAIN_ID,
            now=now,
            max_ttl_s=600,
        ),
    )

    documents = [json.loads(body) for body in bodies]
    clock("spec validation alone (pydantic TaskSpec)", lambda i: parse_spec(documents[i]))
    parsed = [parse_spec(document) for document in documents]
    clock(
        "normalised document + RFC 8785 canonical JSON + sha256 alone",
        lambda i: hashlib.sha256(canonical_json(spec_doc(parsed[i]))).hexdigest(),
    )

    def register(i: int) -> None:
        with Session(engine, expire_on_commit=False) as session:
            consume_nonce(
                session,
                address=account.address.lower(),
                nonce=signed[i]["X-Hashgrid-Nonce"],
                expiry=now + 500,
                commit=False,
            )
            register_spec(
                session=session,
                fees=StaticFeeOracle(FEE_BPS),
                customer=account.address.lower(),
                document=json.loads(bodies[i]),
            )

    clock("whole register step: the two above + nonce and spec INSERTs + SQLite commit", register)

    import sqlite3

    raw = sqlite3.connect(state_dir / "raw.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    raw.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")

    def raw_insert(i: int) -> None:
        raw.execute("BEGIN")
        raw.execute("INSERT INTO t VALUES (?, ?)", (f"n{i}", "x"))
        raw.execute("INSERT INTO t VALUES (?, ?)", (f"s{i}", bodies[i].decode()))
        raw.execute("COMMIT")

    clock("for scale: the same two INSERTs + COMMIT in bare sqlite3, same disk", raw_insert)
    raw.close()
    engine.dispose()
    return timings


def write_section(text: str) -> None:
    """Replace (or append) the '## API' section of docs/benchmarks.md, keeping the others."""
    content = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    lines = content.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == "## API"), None)
    if start is None:
        content = content.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        content = "".join(lines[:start]) + text + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    DOC.write_text(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=8000, help="signed task creations")
    parser.add_argument("--health", type=int, default=8000, help="baseline health GETs")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    console = Console()
    port = _free_port()
    state = Path(tempfile.mkdtemp(prefix="hashgrid-bench-api-"))
    env = {
        **os.environ,
        "HASHGRID_STATE_DIR": str(state),
        "HASHGRID_CHAIN_ID": str(CHAIN_ID),
        "PYTHONPATH": str(ROOT),
    }
    key = "0x" + hashlib.sha256(b"bench-customer").hexdigest()

    console.print(f"signing {args.requests} requests ahead of time...")
    chunk = max(1, args.requests // (os.cpu_count() or 1))
    with mp.get_context("spawn").Pool() as pool:
        batches = pool.map(
            _sign_batch,
            [(i, min(i + chunk, args.requests), key, port) for i in range(0, args.requests, chunk)],
        )
    signed = [raw for batch in batches for raw in batch]

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.api:make_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        _wait_ready(port)
        load = mp.get_context("spawn").Pool(1)
        try:
            load.apply(_load, ((port, [health_request(port)] * 500, args.connections),))  # warm-up
            health = summarise(
                "GET /health (unsigned, baseline)",
                load.apply(_load, ((port, [health_request(port)] * args.health, args.connections),)),
                args.health,
            )
            created = summarise(
                "POST /tasks (EIP-712 signed, new spec)",
                load.apply(_load, ((port, signed, args.connections),)),
                args.requests,
            )
        finally:
            load.close()
            load.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    costs = breakdown(state)

    table = Table(title=f"API ingest (uvicorn x{args.workers}, SQLite WAL, {args.connections} connections)")
    for column in ("path", "requests", "2xx", "req/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for row in (health, created):
        table.add_row(
            row["name"],
            str(row["requests"]),
            str(row["ok"]),
            f"{row['rate']:.0f}",
            f"{row['p50']:.1f}",
            f"{row['p99']:.1f}",
        )
    console.print(table)
    cost_table = Table(title="one signed creation, in-process (µs)")
    cost_table.add_column("step")
    cost_table.add_column("µs", justify="right")
    for step, micros in costs.items():
        cost_table.add_row(step, f"{micros:.0f}")
    console.print(cost_table)
    ratio = created["rate"] / health["rate"] if health["rate"] else 0.0
    verdict = "met" if created["rate"] >= TARGET else "missed"
    console.print(
        f"signed creations: {created['rate']:.0f}/s, {ratio:.2f}x the health baseline; target "
        f"≥ {TARGET:.0f}/s {verdict}"
    )
    if args.no_write:
        return
    load_avg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "## API",
        "",
        f"`python -m bench.api` on {platform.machine()}, {os.cpu_count()} cores shared by the server and the "
        f"load process, {time.strftime('%Y-%m-%d')}; load average at the end: {load_avg}.",
        f"uvicorn ({args.workers} worker, uvloop + httptools) on 127.0.0.1, SQLite (WAL) in a temp dir; load "
        f"from a separate process: {args.connections} keep-alive connections replaying requests signed ahead "
        "of time (EIP-712, each a new spec and nonce). Signature recovery with coincurve (libsecp256k1).",
        "",
        "| request | requests | 2xx | per second | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in (health, created):
        lines.append(
            f"| {row['name']} | {row['requests']} | {row['ok']} | {row['rate']:.0f} | {row['p50']:.1f} | "
            f"{row['p99']:.1f} |"
        )
    lines += [
        "",
        f"Signed creations: {created['rate']:.0f}/s ({ratio:.2f}x the unsigned health baseline); "
        f"target ≥ {TARGET:.0f}/s: **{verdict}**.",
        "",
        "Where one creation's time goes (in-process, one core, µs):",
        "",
        "| step | µs |",
        "|---|---:|",
    ]
    lines += [f"| {step} | {micros:.0f} |" for step, micros in costs.items()]
    lines += [
        "",
        "Reading it: the target is missed on this box by a wide margin, and not because of cryptography. "
        "Signature recovery (coincurve) and spec validation plus canonical hashing together cost ~0.2 ms. "
        "The database write path costs ~1 ms, almost all of it SQLAlchemy session machinery (session, "
        "connection checkout, statement execution, transaction bookkeeping) around two INSERTs that bare "
        "sqlite3 does in well under a tenth of that. The HTTP stack (uvicorn, FastAPI routing and dependency "
        "resolution, threadpool hops for sync dependencies and handlers, response serialisation) is what "
        "the health baseline measures; with the load generator on the same two cores it caps the server "
        "below 1,000 requests/s even for a health check. A second uvicorn worker lifts the baseline but not "
        "creations (SQLite has one writer; writers in two processes wait on its busy handler, which is what "
        "the p99 shows). The ways to 1,000/s: a raw-DBAPI ingest path with group commit (batch many "
        "requests' nonce and spec rows into one transaction), PostgreSQL with several workers, and a "
        "load generator on its own cores.",
        "",
    ]
    write_section("\n".join(lines) + "\n")
    console.print(f"wrote the API section of {DOC}")


if __name__ == "__main__":
    main()
