"""The customer's Python client: submit task specs, follow them, and collect verified results.

It talks to the marketplace over signed HTTP (EIP-712, `hashgrid.signing.HashgridAuth`) and to the chain for
the money (post with an EIP-2612 permit or approve, cancel, claim). The `hashgrid task` and `hashgrid wallet`
commands are a thin layer over it. Every failure is a `hashgrid.errors` class with a one-line message.

    from hashgrid.client import HashgridClient

    client = HashgridClient.from_settings(key="0x...")       # or HashgridClient(url, rpc, deployment, key)
    low, high = client.estimate("examples/wasm.yaml")          # wei of GRID, fee included
    task_id = client.submit("examples/wasm.yaml")              # uploads, registers, posts on chain
    task = client.wait(task_id, timeout=300)                   # {"status": "settled", "result_hash": ...}
    client.download(task_id, "out/")                           # the verified outputs, sha256-checked
    print(client.invoice(task_id).to_dict())                   # paid, fee, refund from chain events
    client.claim()                                             # withdraw the refund
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from hashgrid.chain.deployment import Deployment
from hashgrid.errors import (
    ContentMissing,
    DigestMismatch,
    Forbidden,
    HashgridError,
    InvalidInput,
    MarketplaceError,
    NotFound,
    NotReady,
    SpecInvalid,
    TaskUnplaceable,
    WaitTimeout,
)
from hashgrid.spec import TaskSpec, load_local_spec, parse_spec, spec_hash

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from billing.invoice import Invoice
    from hashgrid.chain.contracts import Contracts

SpecLike = TaskSpec | dict[str, Any] | str | Path
TERMINAL = frozenset({"settled", "failed", "cancelled", "expired"})
CHUNK = 1 << 20
_PRICE_FIELDS = ("fixed", "per_cpu_second", "per_gb_second", "per_gpu_second")
_SCAN_LIMIT = 2000  # files looked at when searching a directory for a blob by sha256


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def as_spec(spec_or_path: SpecLike) -> tuple[TaskSpec, Path | None]:
    """A validated spec and the directory it came from (None for in-memory specs)."""
    if isinstance(spec_or_path, TaskSpec):
        return spec_or_path, None
    if isinstance(spec_or_path, dict):
        return parse_spec(spec_or_path), None
    path = Path(spec_or_path)
    if not path.is_file():
        raise InvalidInput(f"no spec file at {path}")
    return load_local_spec(path), path.resolve().parent


def find_blobs(spec: TaskSpec, search_dirs: list[Path]) -> dict[str, Path]:
    """Map each blob the spec needs (module, inputs) to a local file with that sha256.

    An input is looked for at `<dir>/<input path>` first; anything else by scanning the directories (and
    their subdirectories) for a file of the right size and digest. Missing blobs are simply not in the map.
    """
    wanted: dict[str, int | None] = {blob.sha256: blob.size for blob in spec.inputs}
    if spec.module:
        wanted.setdefault(spec.module, None)
    found: dict[str, Path] = {}
    for blob in spec.inputs:
        for directory in search_dirs:
            candidate = directory / blob.path
            if candidate.is_file() and candidate.stat().st_size == blob.size \
                    and sha256_file(candidate) == blob.sha256:
                found[blob.sha256] = candidate
                break
    missing = {sha: size for sha, size in wanted.items() if sha not in found}
    seen = 0
    for directory in search_dirs:
        if not missing:
            break
        for candidate in sorted(directory.rglob("*")):
            seen += 1
            if seen > _SCAN_LIMIT or not missing:
                break
            if not candidate.is_file():
                continue
            size = candidate.stat().st_size
            if not any(s is None or s == size for s in missing.values()):
                continue
            digest = sha256_file(candidate)
            if digest in missing:
                found[digest] = candidate
                del missing[digest]
    return found


@dataclass(frozen=True)
class Estimate:
    """What a spec would cost in wei of GRID: `low`..`high` for the whole task with the protocol fee, the
    per-replica range, and `escrow`, what submit locks (refunded down to the real cost at settlement).
    Unpacks as `(low, high)`."""

    low: int
    high: int
    per_replica_low: int
    per_replica_high: int
    escrow: int
    fee_bps: int
    providers: int  # online providers whose runtime matches
    notes: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[int]:
        yield self.low
        yield self.high

    def to_dict(self) -> dict[str, Any]:
        return {"low": str(self.low), "high": str(self.high), "per_replica_low": str(self.per_replica_low),
                "per_replica_high": str(self.per_replica_high), "escrow": str(self.escrow),
                "fee_bps": self.fee_bps, "providers": self.providers, "notes": self.notes}


def estimate_from_prices(spec: TaskSpec, price_sheets: list[dict[str, Any]], *, fee_bps: int) -> Estimate:
    """The price range of `spec` on these providers' price sheets (pure; no network).

    The cheapest case is the cheapest provider's price for (almost) no usage, on `replicas` replicas; the
    dearest is the dearest provider's price for every resource used to the timeout, on `max_replicas`
    replicas; each replica's price is capped by max_price_per_replica, and the fee is added on top.
    """
    from billing.invoice import escrowed_for, fee_on
    from billing.prices import MeteredUsage, PriceSheet, price

    cap = spec.max_price_per_replica
    r = spec.resources
    seconds_ms = r.timeout_s * 1000
    full = MeteredUsage(cpu_ms=int(r.cpus * seconds_ms), memory_gb_ms=r.memory_mb * seconds_ms // 1024,
                        gpu_ms=r.gpus * seconds_ms, wall_ms=seconds_ms)
    notes: list[str] = []
    sheets = []
    for raw in price_sheets:
        try:
            sheets.append(PriceSheet.from_mapping({k: v for k, v in raw.items() if k in _PRICE_FIELDS}))
        except HashgridError:
            continue
    if sheets:
        per_low = min(price(MeteredUsage(), sheet, cap) for sheet in sheets)
        per_high = max(price(full, sheet, cap) for sheet in sheets)
    else:
        notes.append("no online provider runs this runtime: the range is 0 up to the cap")
        per_low, per_high = 0, cap
    asks = [price(full, sheet, 2**96 - 1) for sheet in sheets]
    if asks and all(ask > cap for ask in asks):
        notes.append(f"max_price_per_replica ({cap}) is below every online provider's ask for the whole "
                     f"timeout (lowest {min(asks)}): the task would not be placed")
    paid_low = per_low * spec.replicas
    paid_high = per_high * spec.effective_max_replicas
    return Estimate(low=paid_low + fee_on(paid_low, fee_bps), high=paid_high + fee_on(paid_high, fee_bps),
                    per_replica_low=per_low, per_replica_high=per_high,
                    escrow=escrowed_for(spec.effective_max_replicas, cap, fee_bps), fee_bps=fee_bps,
                    providers=len(sheets), notes=notes)


def error_from_response(response: httpx.Response, what: str) -> HashgridError:
    """The hashgrid.errors class for a marketplace error response, with its one-line message."""
    try:
        body = response.json()
        message = str(body.get("message") or body)
        code = str(body.get("code", ""))
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        message, code = response.text[:200] or response.reason_phrase, ""
    message = " ".join(f"{what}: {message}".split())
    status = response.status_code
    if status == 404:
        return NotFound(message, code=code)
    if status == 403:
        return Forbidden(message, code=code)
    if status == 409:
        return NotReady(message, code=code)
    if status == 422 and code == "spec_invalid":
        return SpecInvalid(message, errors=[])
    if 400 <= status < 500:
        return InvalidInput(message, code=code, status=status)
    return MarketplaceError(message, code=code, status=status)


class HashgridClient:
    """A customer of one marketplace on one chain, signing with one key."""

    def __init__(self, marketplace_url: str, rpc_url: str | None, deployment: Deployment | Path | str,
                 key: LocalAccount | str, *, timeout: float = 30.0, tx_timeout: float = 60.0) -> None:
        if not isinstance(deployment, Deployment):
            deployment = Deployment.load(Path(deployment))
        self.deployment = deployment
        from hashgrid.signing import HashgridAuth, KeySigner

        # requests are signed by `signer` (coincurve); the eth-account LocalAccount that sends chain
        # transactions, and web3 with it, is built on first use: reading a task's status needs neither
        try:
            self.signer = KeySigner(key) if isinstance(key, str) else key
        except (ValueError, TypeError):
            raise InvalidInput("not a valid private key") from None
        self._key = key
        self._account: LocalAccount | None = None if isinstance(key, str) else key
        self.marketplace_url = marketplace_url.rstrip("/")
        self.rpc_url = rpc_url or self.deployment.rpc_url
        self.chain_id = self.deployment.chain_id
        self._tx_timeout = tx_timeout
        self._contracts: Contracts | None = None
        self.http = httpx.Client(base_url=self.marketplace_url, timeout=timeout,
                                 auth=HashgridAuth(self.signer, chain_id=self.chain_id))

    @classmethod
    def from_settings(cls, key: LocalAccount | str | None = None) -> HashgridClient:
        """A client from HASHGRID_* settings (marketplace URL, RPC, deployment file, private key)."""
        from hashgrid.config import Settings

        settings = Settings()
        chosen = key or settings.private_key or _default_wallet_key(settings.state_dir)
        return cls(settings.marketplace_url, settings.rpc_url, settings.deployment_path, chosen,
                   tx_timeout=settings.tx_timeout_seconds)

    # ------------------------------------------------------------------ plumbing
    @property
    def address(self) -> str:
        return str(self.signer.address)

    @property
    def account(self) -> LocalAccount:
        """The eth-account wallet that sends this customer's chain transactions (built on first use)."""
        if self._account is None:
            from eth_account import Account

            self._account = Account.from_key(self._key)
        return self._account

    @property
    def contracts(self) -> Contracts:
        """The deployment's contracts over `rpc_url` (connected on first use; the chain id is checked)."""
        if self._contracts is None:
            from hashgrid.chain.client import ChainClient
            from hashgrid.chain.contracts import Contracts

            chain = ChainClient(self.rpc_url, tx_timeout=self._tx_timeout)
            if chain.chain_id != self.chain_id:
                raise InvalidInput(f"the RPC serves chain {chain.chain_id} but the deployment is for chain "
                                   f"{self.chain_id}")
            self._contracts = Contracts.load(chain, self.deployment)
        return self._contracts

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HashgridClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise MarketplaceError(f"marketplace unreachable at {self.marketplace_url}: "
                                   f"{type(exc).__name__}") from None
        if response.status_code >= 400:
            raise error_from_response(response, what)
        return response

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        return dict(self._request(method, path, what, **kwargs).json())

    # ------------------------------------------------------------------ blobs
    def has_blob(self, sha256: str) -> bool:
        """Whether this wallet already holds the blob at the marketplace (a signed HEAD: a blob is 404 to a
        wallet with no claim to it, so another wallet's copy does not count and is uploaded again)."""
        try:
            response = self.http.head(f"/blobs/{sha256}")
        except httpx.HTTPError as exc:
            raise MarketplaceError(f"marketplace unreachable at {self.marketplace_url}: "
                                   f"{type(exc).__name__}") from None
        return response.status_code == 200

    def upload(self, path: Path, sha256: str | None = None) -> str:
        """Upload one file as a blob (skipped when the marketplace has it); returns its sha256."""
        digest = sha256 or sha256_file(path)
        if self.has_blob(digest):
            return digest
        with path.open("rb") as handle:
            self._request("PUT", f"/blobs/{digest}", f"uploading {path.name}", content=handle.read())
        return digest

    def upload_blobs(self, spec: TaskSpec, search_dirs: list[Path],
                     known: dict[str, Path] | None = None) -> list[str]:
        """Upload every blob the spec needs that the marketplace lacks; returns the digests uploaded.
        `known` maps a sha256 to a local file already hashed (read first, before searching)."""
        needed = [blob.sha256 for blob in spec.inputs] + ([spec.module] if spec.module else [])
        absent = [sha for sha in dict.fromkeys(needed) if not self.has_blob(sha)]
        if not absent:
            return []
        local = dict(known or {})
        if any(sha not in local for sha in absent):
            local |= find_blobs(spec, [d for d in search_dirs if d.is_dir()])
        missing = [sha for sha in absent if sha not in local]
        if missing:
            names = {b.sha256: b.path for b in spec.inputs} | ({spec.module: "module"} if spec.module else {})
            listed = ", ".join(f"{names.get(sha, '?')} ({sha[:12]}…)" for sha in missing)
            where = ", ".join(str(d) for d in search_dirs) or "nowhere"
            raise ContentMissing(f"no local file for {listed}: looked in {where} (pass --inputs DIR)")
        for sha in absent:
            self.upload(local[sha], sha)
        return absent

    # ------------------------------------------------------------------ tasks
    def register(self, spec: TaskSpec) -> dict[str, Any]:
        """POST /tasks: the spec hash and the escrow to lock (checked against our own spec hash)."""
        from hashgrid.spec import spec_document

        registration = self._json("POST", "/tasks", "registering the spec", json=spec_document(spec))
        mine = "0x" + spec_hash(spec).hex()
        if str(registration["spec_hash"]).lower() != mine:
            raise MarketplaceError(f"the marketplace hashed the spec to {registration['spec_hash']}, "
                                   f"expected {mine}")
        return registration

    def submit(self, spec_or_path: SpecLike, *, inputs_dir: Path | str | None = None,
               permit: bool = True) -> int:
        """Validate, upload the module and inputs, register the spec and post it on chain; the task id."""
        if inputs_dir is not None and not Path(inputs_dir).is_dir():
            raise InvalidInput(f"inputs directory {inputs_dir} does not exist")
        local: dict[str, Path] = {}
        if isinstance(spec_or_path, (str, Path)) and Path(spec_or_path).is_file():
            spec_path = Path(spec_or_path)
            spec = load_local_spec(spec_path, Path(inputs_dir) if inputs_dir is not None else None, local)
            spec_dir: Path | None = spec_path.resolve().parent
        else:
            spec, spec_dir = as_spec(spec_or_path)
        dirs = [Path(inputs_dir)] if inputs_dir is not None else []
        if spec_dir is not None:
            dirs.append(spec_dir)
        self.upload_blobs(spec, dirs, known=local)
        registration = self.register(spec)
        contracts = self.contracts
        escrow = contracts.escrow
        amount = escrow.escrow_for(spec.effective_max_replicas, spec.max_price_per_replica)
        balance = contracts.token.balance_of(self.address)
        if balance < amount:
            raise InvalidInput(f"{self.address} holds {_grid(balance)} but the task escrows {_grid(amount)} "
                               "(`hashgrid faucet` on a dev chain)")
        windows = escrow.param("commitWindow") + escrow.param("revealWindow")
        if spec.deadline_s <= windows + 60:
            raise InvalidInput(f"deadline_s ({spec.deadline_s}) must exceed the escrow's commit and reveal "
                               f"windows ({windows} s) by more than a minute")
        from hashgrid.chain.contracts import TaskTerms

        terms = TaskTerms(spec_hash=bytes.fromhex(str(registration["spec_hash"]).removeprefix("0x")),
                          replicas=spec.replicas, quorum=spec.quorum,
                          max_replicas=spec.effective_max_replicas,
                          max_price_per_replica=spec.max_price_per_replica,
                          deadline=contracts.client.timestamp() + spec.deadline_s)
        if permit:
            receipt = escrow.post_task_with_permit(contracts.token, terms, sender=self.account)
        else:
            contracts.token.approve(escrow.address, amount, sender=self.account)
            receipt = escrow.post_task(terms, sender=self.account)
        return escrow.task_id_of(receipt)

    def status(self, task_id: int) -> dict[str, Any]:
        """GET /tasks/{id}: status, replicas, unplaced reason, result hash (the customer only)."""
        return self._json("GET", f"/tasks/{int(task_id)}", f"task {task_id}")

    def tasks(self, *, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """GET /tasks: this wallet's tasks, newest first, as {data, count}."""
        return self._json("GET", "/tasks", "listing tasks", params={"offset": offset, "limit": limit})

    def wait(self, task_id: int, timeout: float = 600.0, *, interval: float = 1.0,
             on_status: Any = None, place_timeout: float | None = 60.0) -> dict[str, Any]:
        """Poll until the task is final (settled, failed, cancelled, expired); the last status.

        A task not indexed yet (404 right after posting) is waited for; `on_status(task)` sees each change of
        status or of the reason it is not placed. A task still posted with the same reason for
        `place_timeout` seconds, a reason other than "busy" (nothing can place it as things stand), raises
        TaskUnplaceable with that reason; None waits through it.
        """
        deadline = time.monotonic() + timeout
        last: tuple[str, str] | None = None
        stuck_since = time.monotonic()
        while True:
            try:
                task = self.status(task_id)
            except NotFound:
                task = None
            if task is not None:
                seen = (str(task["status"]), str(task.get("unplaced_reason") or ""))
                if seen != last:
                    stuck_since = time.monotonic()
                    if on_status is not None:
                        on_status(task)
                last = seen
                if seen[0] in TERMINAL:
                    return task
                if (place_timeout is not None and seen[0] == "posted" and seen[1] and not is_busy(seen[1])
                        and time.monotonic() - stuck_since >= place_timeout):
                    raise TaskUnplaceable(
                        f"task {task_id} cannot be placed: {seen[1]}. It stays posted with its escrow "
                        f"locked: `hashgrid task cancel {task_id}` refunds it, `hashgrid task wait "
                        f"{task_id}` keeps waiting", task_id=task_id, reason=seen[1])
            if time.monotonic() > deadline:
                state = last[0] if last else "not indexed"
                reason = f" ({last[1]})" if last and last[1] else ""
                raise WaitTimeout(f"task {task_id} is still {state}{reason} after {timeout:g}s; `hashgrid "
                                  f"task wait {task_id}` waits again")
            time.sleep(interval)

    def logs(self, task_id: int, follow: bool = False) -> Iterator[str]:
        """The task's log lines; with `follow`, streamed (SSE) until the task is final."""
        path = f"/tasks/{int(task_id)}/logs"
        if not follow:
            for chunk in self._json("GET", path, f"logs of task {task_id}")["data"]:
                yield from _chunk_lines(chunk)
            return
        try:
            with self.http.stream("GET", path, params={"follow": "true"}, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response, f"logs of task {task_id}")
                event = ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line.removeprefix("event:").strip()
                    elif line.startswith("data:") and event == "log":
                        yield from _chunk_lines(json.loads(line.removeprefix("data:")))
                    elif line.startswith("data:") and event == "end":
                        return
        except httpx.HTTPError as exc:
            raise MarketplaceError(f"log stream of task {task_id} broke: {type(exc).__name__}") from None

    def result(self, task_id: int) -> dict[str, Any]:
        """The accepted result hash, agreeing providers and output manifest (NotReady before settlement)."""
        return self._json("GET", f"/tasks/{int(task_id)}/result", f"result of task {task_id}")

    def download(self, task_id: int, dest: Path | str) -> list[Path]:
        """Download the result's output files under `dest`, each checked against its sha256."""
        dest = Path(dest)
        written = []
        for item in self.result(task_id)["outputs"]:
            relative = Path(str(item["path"]))
            if relative.is_absolute() or ".." in relative.parts:
                raise MarketplaceError(f"refusing output path {relative}")
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            data = self._request("GET", f"/blobs/{item['sha256']}", f"output {relative}").content
            actual = hashlib.sha256(data).hexdigest()
            if actual != item["sha256"]:
                raise DigestMismatch(str(relative), expected=str(item["sha256"]), actual=actual)
            target.write_bytes(data)
            written.append(target)
        return written

    def invoice(self, task_id: int) -> Invoice:
        """The task's bill from its chain events (billing.invoice): paid per provider, fee, refund."""
        from billing.invoice import invoice_from_events

        events = self.contracts.escrow.events(None, "latest", first_indexed=int(task_id))
        if not any(e.name == "TaskPosted" for e in events):
            raise NotFound(f"no task {task_id} on chain")
        invoice = invoice_from_events(int(task_id), events)
        if invoice is None:
            raise NotReady(f"task {task_id} is still open: no invoice until it is settled, failed, expired "
                           "or cancelled")
        return invoice

    def cancel(self, task_id: int) -> int:
        """Cancel a task still waiting for placement (on chain); its escrow becomes claimable (returned)."""
        task = self.contracts.escrow.get_task(int(task_id))
        if int(task.customer, 16) == 0:
            raise NotFound(f"no task {task_id} on chain")
        if task.customer.lower() != self.address.lower():
            raise Forbidden(f"task {task_id} belongs to {task.customer}, not {self.address}")
        state = task.state.name.lower()
        if state != "posted":
            raise NotReady(f"task {task_id} is {state}: only a task still waiting for placement (posted) can "
                           "be cancelled")
        before = self.contracts.escrow.claimable(self.address)
        self.contracts.escrow.cancel_task(int(task_id), sender=self.account)
        return int(self.contracts.escrow.claimable(self.address) - before)

    def claim(self) -> int:
        """Withdraw this wallet's escrow credits (refunds); the amount claimed (0 when there was none)."""
        escrow = self.contracts.escrow
        if escrow.claimable(self.address) == 0:
            return 0
        return escrow.claimed_amount(escrow.claim(sender=self.account))

    def providers(self) -> list[dict[str, Any]]:
        """The marketplace's providers (GET /explorer/providers), with `online`."""
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self._json("GET", "/explorer/providers", "listing providers",
                              params={"offset": offset, "limit": 100})
            rows.extend(page["data"])
            offset += len(page["data"])
            if not page["data"] or offset >= int(page["count"]):
                return rows

    def estimate(self, spec_or_path: SpecLike) -> Estimate:
        """The price range before paying, from the online providers' prices that run the spec's runtime,
        capped by max_price_per_replica, with the escrow submit would lock. Unpacks as `(low, high)`."""
        spec, _ = as_spec(spec_or_path)
        sheets = [p.get("prices") or {} for p in self.providers()
                  if p.get("online") and (not p.get("runtimes") or spec.runtime in p["runtimes"])]
        fee_bps = self.contracts.escrow.param("protocolFeeBps")
        return estimate_from_prices(spec, sheets, fee_bps=fee_bps)


BUSY_MARKERS = ("are busy", "have room now")  # the matcher's "busy" reasons: placement waits for free room


def is_busy(reason: str) -> bool:
    """Whether an unplaced reason is "busy" (providers match but lack room now): waiting helps."""
    return any(marker in reason for marker in BUSY_MARKERS)


def _grid(wei: int) -> str:
    whole = f"{wei / 10**18:,.6f}".rstrip("0").rstrip(".")
    return f"{whole} GRID"


def _default_wallet_key(state_dir: Path) -> str:
    """The key of the CLI's default wallet (<state_dir>/wallets/default.json), decrypted with
    HASHGRID_KEYSTORE_PASSWORD, so a script and `hashgrid task` sign as the same customer."""
    import os

    path = state_dir / "wallets" / "default.json"
    if not path.is_file():
        raise InvalidInput(f"no signing key: pass key=, set HASHGRID_PRIVATE_KEY, or make a wallet ({path}) "
                           "with `hashgrid wallet new`")
    password = os.environ.get("HASHGRID_KEYSTORE_PASSWORD")
    if password is None:
        raise InvalidInput(f"the wallet {path} needs its password in HASHGRID_KEYSTORE_PASSWORD")
    try:
        from eth_account import Account

        return "0x" + bytes(Account.decrypt(json.loads(path.read_text()), password)).hex()
    except ValueError:
        raise InvalidInput(f"wrong password for {path} (HASHGRID_KEYSTORE_PASSWORD)") from None


def _chunk_lines(chunk: dict[str, Any]) -> Iterator[str]:
    provider = str(chunk.get("provider", ""))[:10]
    for line in str(chunk.get("data", "")).splitlines():
        yield f"[{provider}] {line}"
