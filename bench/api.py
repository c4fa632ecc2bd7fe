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

    from hashgrid.signing import request_digest, sign_request
    from marketplace.api.chain import StaticFeeOracle
    from marketplace.api.ingest import SpecIngest, SpecWriter
    from marketplace.api.security import verify_signed_request
    from marketplace.api.services.tasks import prepare_spec
    from marketplace.db import init_db, make_engine

    account = Account.from_key(hashlib.sha256(b"bench-breakdown").digest())
    address = account.address.lower()
    engine = make_engine(f"sqlite:///{state_dir / 'breakdown.db'}")
    init_db(engine)
    bodies = [json.dumps(spec_document(10**6 + i)).encode() for i in range(samples)]
    signed = [
        sign_request(account, method="POST", url="http://x/tasks", body=b, chain_id=CHAIN_ID, ttl_s=590)
        for b in bodies
    ]
    now = int(time.time())
    timings: dict[str, float] = {}

    def clock(name: str, fn: Any, count: int = samples, per_call: int = 1) -> None:
        """Time `fn(0..count-1)`; each call handles `per_call` requests."""
        started = time.perf_counter()
        for i in range(count):
            fn(i)
        timings[name] = 1e6 * (time.perf_counter() - started) / (count * per_call)

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
        "the above + signature recovery (coincurve) + checks",
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
    clock(
        "JSON parse + spec validation + normalised canonical JSON + sha256",
        lambda i: prepare_spec(json.loads(bodies[i])),
    )
    prepared = [prepare_spec(document) for document in documents]
    items = [
        SpecIngest(address, p.spec_hash, p.document, nonce=signed[i]["X-Hashgrid-Nonce"], expiry=now + 500)
        for i, p in enumerate(prepared)
    ]
    writer = SpecWriter(engine, StaticFeeOracle(FEE_BPS))
    for batch in (1, 32):
        offset = 0 if batch == 1 else samples // 2
        clock(
            f"nonce + spec INSERTs and COMMIT, group-committed in batches of {batch} (per request)",
            lambda i, b=batch, o=offset: writer._write_batch(items[o + i * b : o + (i + 1) * b]),
            count=(samples // 2) // batch,
            per_call=batch,
        )
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

    clock("for scale: two INSERTs + COMMIT per request in bare sqlite3, same disk", raw_insert)
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (the uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def serve_and_load(
    *, workers: int, signed: list[bytes], health_count: int, connections: int, port: int
) -> list[dict[str, Any]]:
    """Start uvicorn with `workers`, then load it from another process: health baseline, then creations."""
    state = Path(tempfile.mkdtemp(prefix="hashgrid-bench-api-"))
    env = {
        **os.environ,
        "HASHGRID_STATE_DIR": str(state),
        "HASHGRID_CHAIN_ID": str(CHAIN_ID),
        "PYTHONPATH": str(ROOT),
        # one loopback address and a few wallets load the server far past any client's rate limit
        "HASHGRID_RATE_LIMIT_IP": "off",
        "HASHGRID_RATE_LIMIT_WALLET": "off",
        "HASHGRID_RATE_LIMIT_READ": "off",
    }
    from marketplace.db import engine_from_settings, init_db
    from marketplace.settings import MarketplaceSettings

    # migrate first, as `hashgrid marketplace serve` does: workers migrating at once would race
    engine = engine_from_settings(MarketplaceSettings(state_dir=state, chain_id=CHAIN_ID))
    init_db(engine)
    engine.dispose()
    command = [sys.executable, "-m", "uvicorn", "bench.api:make_app", "--factory", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    rows = []
    try:
        _wait_ready(port)
        load = mp.get_context("spawn").Pool(1)
        try:
            load.apply(_load, ((port, [health_request(port)] * 500, connections),))  # warm-up
            phases = [
                ("GET /health (unsigned, baseline)", [health_request(port)] * health_count),
                ("POST /tasks (EIP-712 signed, new spec)", signed),
            ]
            for name, requests in phases:
                cpu = _cpu_seconds(server.pid)
                result = load.apply(_load, ((port, requests, connections),))
                row = summarise(name, result, len(requests))
                row["workers"] = workers
                row["server_cpu_us"] = 1e6 * (_cpu_seconds(server.pid) - cpu) / max(1, row["ok"])
                rows.append(row)
        finally:
            load.close()
            load.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=8000, help="signed task creations per run")
    parser.add_argument("--health", type=int, default=8000, help="baseline health GETs per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to run, e.g. 1,2")
    parser.add_argument("--tasks", type=int, default=200, help="tasks posted on chain for the latency run")
    parser.add_argument("--skip-chain", action="store_true", help="no post-to-assignment run")
    parser.add_argument("--write-docs", action="store_true",
                        help="update the API section of docs/benchmarks.md (`make bench` does)")
    args = parser.parse_args()
    console = Console()
    port = _free_port()
    key = "0x" + hashlib.sha256(b"bench-customer").hexdigest()
    worker_counts = [int(w) for w in args.workers.split(",")]

    total = args.requests * len(worker_counts)
    console.print(f"signing {total} requests ahead of time...")
    chunk = max(1, total // (os.cpu_count() or 1))
    with mp.get_context("spawn").Pool() as pool:
        batches = pool.map(
            _sign_batch, [(i, min(i + chunk, total), key, port) for i in range(0, total, chunk)]
        )
    signed = [raw for batch in batches for raw in batch]
    rows: list[dict[str, Any]] = []
    for n, workers in enumerate(worker_counts):
        console.print(f"uvicorn with {workers} worker(s)...")
        rows += serve_and_load(
            workers=workers,
            signed=signed[n * args.requests : (n + 1) * args.requests],
            health_count=args.health,
            connections=args.connections,
            port=port,
        )
    load_avg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    costs = breakdown(Path(tempfile.mkdtemp(prefix="hashgrid-bench-api-")))
    console.print(ingest_table(rows, args.connections))
    cost_table = Table(title="one signed creation, in-process (µs)")
    cost_table.add_column("step")
    cost_table.add_column("µs", justify="right")
    for step, micros in costs.items():
        cost_table.add_row(step, f"{micros:.0f}")
    console.print(cost_table)
    best = max((r for r in rows if r["name"].startswith("POST")), key=lambda r: r["rate"])
    verdict = "met" if best["rate"] >= TARGET else "missed"
    console.print(
        f"signed creations: best {best['rate']:.0f}/s with {best['workers']} worker(s); "
        f"target ≥ {TARGET:.0f}/s {verdict}; load average after the ingest runs: {load_avg}"
    )
    latency: list[tuple[str, dict[str, Any]]] = []
    if not args.skip_chain:
        from bench import assignment

        for label, overrides in assignment.CONFIGS:
            console.print(f"post → assignment: {label}")
            result = assignment.run(tasks=args.tasks, env_overrides=overrides, console=console)
            console.print(assignment.table(result))
            latency.append((label, result))
    if args.write_docs:
        write_section(doc_section(rows, costs, latency, connections=args.connections, load_avg=load_avg))
        console.print(f"wrote the API section of {DOC}")


def ingest_table(rows: list[dict[str, Any]], connections: int) -> Table:
    table = Table(title=f"API ingest (SQLite WAL, {connections} keep-alive connections from one process)")
    columns = ("path", "workers", "requests", "2xx", "req/s", "p50 ms", "p99 ms", "server CPU µs/req")
    for column in columns:
        table.add_column(column, justify="left" if column == "path" else "right")
    for row in rows:
        table.add_row(
            row["name"],
            str(row["workers"]),
            str(row["requests"]),
            str(row["ok"]),
            f"{row['rate']:.0f}",
            f"{row['p50']:.1f}",
            f"{row['p99']:.1f}",
            f"{row['server_cpu_us']:.0f}",
        )
    return table


def doc_section(
    rows: list[dict[str, Any]],
    costs: dict[str, float],
    latency: list[tuple[str, dict[str, Any]]],
    *,
    connections: int,
    load_avg: str,
) -> str:
    """The '## API' section of docs/benchmarks.md: the figures of this run (the prose around them is kept
    in DOC_NOTES so a rerun does not drop it)."""
    from bench import assignment

    lines = [
        "## API",
        "",
        f"`python -m bench.api` on {platform.machine()}, {os.cpu_count()} cores shared by the server, the "
        f"load process and whatever else runs on the machine, {time.strftime('%Y-%m-%d %H:%M')}; load "
        f"average after the ingest runs: {load_avg}.",
        "",
        "### Signed task creations (POST /tasks)",
        "",
        "uvicorn (uvloop + httptools) on 127.0.0.1, SQLite (WAL, synchronous=NORMAL) in a temp dir; load "
        f"from a separate process: {connections} keep-alive connections replaying requests signed ahead of "
        "time (EIP-712, each a new spec and nonce). Server CPU is the user + system time of the uvicorn "
        "processes per answered request: what one request costs, whatever else the machine is doing.",
        "",
        "| request | workers | requests | 2xx | per second | p50 (ms) | p99 (ms) | server CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['workers']} | {row['requests']} | {row['ok']} | {row['rate']:.0f} | "
            f"{row['p50']:.1f} | {row['p99']:.1f} | {row['server_cpu_us']:.0f} |"
        )
    best = max((r for r in rows if r["name"].startswith("POST")), key=lambda r: r["rate"])
    verdict = "met" if best["rate"] >= TARGET else "missed"
    lines += [
        "",
        f"Best: {best['rate']:.0f} signed creations/s with {best['workers']} worker(s); target ≥ "
        f"{TARGET:.0f}/s: **{verdict}** in this run.",
        "",
        "Where one creation's time goes (in-process, one core, µs per request):",
        "",
        "| step | µs |",
        "|---|---:|",
    ]
    lines += [f"| {step} | {micros:.0f} |" for step, micros in costs.items()]
    if latency:
        first = latency[0][1]
        p99 = assignment.percentile(first["first"], 0.99) if first["first"] else float("inf")
        verdict = "met" if p99 < assignment.TARGET_P99_MS else "missed"
        lines += [
            "",
            "### Post to assignment (anvil)",
            "",
            f"{first['tasks']} tasks posted one at a time (postTask, 3 replicas) at random gaps of 50-250 "
            "ms on anvil (automine); the marketplace under uvicorn with its jobs in-process (SQLite, shipped "
            "intervals); four staked providers registered and heartbeating through the signed API, each "
            "long-polling GET /providers/{address}/assignments as the daemon does. Latency runs from the "
            "moment the post's receipt is back (its block mined) to the moment a provider's long-poll "
            "returns the assignment (one clock). The breakdown uses the database's own timestamps (task "
            "row indexed, replica row assigned). Runs: "
            + "; ".join(
                f"{chr(65 + i)} = {label} (load average after it: {result['load']})"
                for i, (label, result) in enumerate(latency)
            )
            + ".",
            "",
            "| path | n | "
            + " | ".join(
                f"{chr(65 + i)} p50 | {chr(65 + i)} p99 | {chr(65 + i)} max" for i in range(len(latency))
            )
            + " |",
            "|---|---:|" + "---:|---:|---:|" * len(latency),
        ]
        by_run = [assignment.rows(result) for _, result in latency]
        for i, (name, n, *_rest) in enumerate(by_run[0]):
            cells = [
                f"{r[i][2]:.0f} | {r[i][3]:.0f} | {r[i][4]:.0f}" if i < len(r) else "- | - | -"
                for r in by_run
            ]
            lines.append(f"| {name.strip()} | {n} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"p99 post to first assignment under {assignment.TARGET_P99_MS:.0f} ms with the shipped settings "
            f"(A): **{verdict}** ({p99:.0f} ms).",
        ]
    lines += ["", DOC_NOTES.strip(), ""]
    return "\n".join(lines) + "\n"


DOC_NOTES = """
**Reading it.** The box is two cores shared with the other engineers' test runs: look at the load averages
before comparing runs, and at server CPU per request, which moves less than requests per second.

*Ingest: what changed* (earlier today: 754 creations/s at best, server CPU 1.75-2.2 ms a request).
POST /tasks takes only the Request and is served as a plain Starlette route ahead of FastAPI's router
(`marketplace/api/app.py`; the same endpoint stays in FastAPI's router, where OpenAPI documents it): measured
in-process, FastAPI's routing through the included routers and its dependency solving cost ~0.4 ms a
creation, as much as the work itself. Server CPU fell to 1.0-1.3 ms a request, and the rate passed 1,000/s
with one worker in quiet moments (1,027-1,122/s) and with two in every run since (1,180-1,506/s). Before that:
the endpoint is async end to end (signature and spec checked on the loop, then the nonce and spec rows go
to a per-process writer thread that commits whatever has queued up in one transaction,
`marketplace/api/ingest.py`); `canonical_json` writes the common spec shape with the C json encoder
(byte-identical to rfc8785, checked by a property test); keccak comes from safe-pysha3 (pycryptodome's
ctypes calls released the GIL four times per hash); keccak of the method and path and the key-to-address
step are cached. The benchmark migrates before starting uvicorn, as `hashgrid marketplace serve` does.

*What did not change:* every request's signature, chain id, nonce form and expiry window are checked before
anything is written; the nonce is spent in the same transaction as the spec row, so a refused request leaves
nothing; a nonce used twice within one batch is refused by the writer, and across batches and across worker
processes by the UsedNonce primary key in the shared database (there is no per-process replay cache). A body
that is not a JSON object is a 422 as before.

*Reading the rate.* The load generator and whatever else runs share the same two cores, so the rate swings
by a quarter between runs of the same code (878-1,506/s since the change above); server CPU per request is
the steadier figure. Two workers help only when a core is free (SQLite has one writer; each worker's writer
takes the lock in turn). The health check is a sync route: a thread hop for the handler and another for
FastAPI's response validation, so it costs more than a creation. Since decision 11 (docs/decisions.md) a
request's database work happens in the one thread its endpoint runs in; before, 64 concurrent health checks
stalled the server until the connection pool timed out.

*Post to assignment: what changed* (measured before with this benchmark, 40 tasks: p50 1,636 ms, p99
3,054 ms, of which post to indexed p50 991 ms; assigned to seen p50 371 ms). The in-process jobs ran on one
thread, so the indexer (every 0.5 s) waited behind settle_tasks, whose rounds took 0.5-2.8 s here; and the
long-poll re-checked every 0.25 s. Now (`marketplace/jobs/scheduler.py`) index and match run on an assign
lane of their own, the indexer runs when `eth_blockNumber` shows a new block (polled every 50 ms; an idle
chain costs that RPC and nothing else), the match follows the index at once (as before), and a round that
assigned rings the API's bell (`marketplace/api/bell.py`) so the long-polls return immediately; the
matching round reuses the job context's ChainOps (building its web3 contracts took ~30 ms a round).

*Post to assignment: the second pass* (earlier today p50 180-275 ms, p99 419-620 ms: the target missed).
Traced per step in the server, then profiled in-process: an index run cost 40 ms and a matching round 70 ms
on a quiet box, and most of it was neither the chain nor the database. web3 asked the node for its chain id
before every call, estimate and send; requests walked the proxy environment on every RPC; whole blocks went
through web3's formatters to read one hash or base fee; each transaction was ABI-encoded twice; the indexer
and its web3 contract were built per run; minStake was read every round. Fixed in `ChainClient` and the jobs
(docs/decisions.md, 13): 15 ms an index run, 30 ms a round. And the tails: on SQLite a job's first write often
took 8-40 ms, the sum of SQLite's busy-handler sleeps (1, 2, 5, 10... ms) while an API request held the write
lock for a millisecond. Writers of one process now queue on a gate and run the moment it is free
(decision 12). The settle pass reads replica columns instead of Replica objects.

*Where p99 stands.* Under the target in every run since, on the same box: 200-322 ms (p50 87-122 ms) with
the shipped settings. Run B, with the settle job paced out, was 40-60 ms better at p99 in two earlier runs and
worse in this one: what settlement every second costs the assign lane (they share the process's GIL) is now
within the box's noise. A jobs lane in a process of its own would end even that, but on SQLite it would bring
the busy handler's sleeps back between the two processes (the gate is per process), so it stays in-process.
What remains is mostly the machine: anvil's own receipt has a p99 three times its p50, and a post that lands
during the previous post's matching round waits for that round.
"""


if __name__ == "__main__":
    main()
