"""The web app, served from the API's own origin under /app: its built files (build/webapp, made by
`make setup`), the chain config it needs (chain id, contract addresses and ABIs from the deployment file),
the example templates with their public input files, and a price estimate for a spec.

Same origin, so the app needs no CORS and its bearer token never leaves the marketplace's origin; nothing
here reads or writes private data (every private read goes through the signed API routes).
"""

from __future__ import annotations

import hashlib
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from sqlmodel import Session

from hashgrid.chain.deployment import Deployment
from hashgrid.config import REPO_ROOT
from hashgrid.errors import HashgridError, NotFound
from hashgrid.spec import load_spec_document, parse_spec
from marketplace.api.deps import json_object_body
from marketplace.api.services import explorer as explorer_service
from marketplace.api.services.providers import is_online, min_stake_or_none
from marketplace.settings import MarketplaceSettings

router = APIRouter(prefix="/app", include_in_schema=False)
EXAMPLES = REPO_ROOT / "examples"
TEMPLATES = ("wasm", "shell", "ai")  # the runnable examples `make setup` writes (examples/<name>.yaml)
ABI_CONTRACTS = ("GridToken", "ProviderRegistry", "TaskEscrow", "GridGovernor", "TimelockController")
_ASSET_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".map": "application/json",
          ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json"}
ONLINE_CACHE_S = 2.0  # how stale the estimate's provider list may be
MAX_EXAMPLE = 16 * 1024 * 1024


def webapp_dir(settings: MarketplaceSettings) -> Path:
    return settings.webapp_dir or (REPO_ROOT / "build" / "webapp")


def _asset(directory: Path, name: str) -> Response:
    """A file of the built app by its plain name (no folders, no dot files): nothing else on disk is
    reachable through this route."""
    path = directory / name
    if not _ASSET_RE.match(name) or not path.is_file():
        raise NotFound(f"no web app file {name!r} (was `make setup` run?)")
    media = _TYPES.get(path.suffix, "application/octet-stream")
    cache = "no-cache" if name == "index.html" else "public, max-age=300"
    return FileResponse(path, media_type=media, headers={"cache-control": cache})


@router.get("")
def root() -> Response:
    return RedirectResponse("/app/", status_code=308)


@router.get("/")
def index(request: Request) -> Response:
    return _asset(webapp_dir(request.app.state.settings), "index.html")


@lru_cache(maxsize=4)
def _config(path: Path, mtime: float) -> dict[str, Any]:
    deployment = Deployment.load(path)
    return {
        "chain_id": deployment.chain_id,
        "start_block": deployment.start_block,
        "addresses": {n: deployment.addresses[n] for n in ABI_CONTRACTS if n in deployment.addresses},
        "abis": {name: deployment.abis[name] for name in ABI_CONTRACTS if name in deployment.abis},
        "params": deployment.params,
    }


@router.get("/config.json")
def config(request: Request) -> Response:
    """What the app needs to talk to the chain through the user's wallet: chain id, addresses, ABIs."""
    settings: MarketplaceSettings = request.app.state.settings
    path = settings.deployment_path
    if not path.exists():
        raise NotFound(f"the marketplace has no deployment file ({path.name})")
    body = dict(_config(path, path.stat().st_mtime))
    body["marketplace_chain_id"] = settings.chain_id
    return JSONResponse(body, headers={"cache-control": "no-cache"})


@lru_cache(maxsize=1)
def _examples() -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """The runnable templates and the example files they name, by sha256 (computed once per process)."""
    files: dict[str, Path] = {}
    for path in EXAMPLES.rglob("*"):
        if path.is_file() and path.suffix not in (".yaml", ".json") and path.stat().st_size <= MAX_EXAMPLE:
            files[hashlib.sha256(path.read_bytes()).hexdigest()] = path
    templates = []
    for name in TEMPLATES:
        path = EXAMPLES / f"{name}.yaml"
        if not path.exists():
            continue
        document = load_spec_document(path)
        wanted = [i["sha256"] for i in document.get("inputs", [])]
        if document.get("module"):
            wanted.append(document["module"])
        if all(sha in files for sha in wanted):  # a template whose files are all here, nothing else
            templates.append({"name": name, "title": document.get("name", name), "spec": document,
                              "files": {sha: files[sha].name for sha in wanted}})
    return templates, {sha: files[sha] for t in templates for sha in t["files"]}


@router.get("/templates.json")
def templates() -> dict[str, Any]:
    """The example specs (examples/*.yaml) a customer can start from."""
    found, _ = _examples()
    return {"data": found, "count": len(found)}


@router.get("/templates/files/{sha256}")
def template_file(sha256: str = PathParam(pattern=r"^[0-9a-f]{64}$")) -> Response:
    """An example file a template names (public sample data, never an uploaded blob)."""
    _, files = _examples()
    if sha256 not in files:
        raise NotFound(f"no template file {sha256}")
    return FileResponse(files[sha256], media_type="application/octet-stream")


@router.post("/estimate")
async def estimate(request: Request) -> dict[str, Any]:
    """The price range of a spec on the online providers that run its runtime (the CLI's `task estimate`),
    with how many there are and why none would take it."""
    from hashgrid.client import estimate_from_prices

    spec = parse_spec(await json_object_body(request))  # strict JSON, 422 otherwise
    state = request.app.state
    settings: MarketplaceSettings = state.settings

    def online_providers() -> list[Any]:
        with Session(state.engine) as session:
            rows, _ = explorer_service.list_providers(session=session, offset=0, limit=10_000)
        minimum = min_stake_or_none(state.stake_oracle)
        return [r for r in rows if is_online(r, ttl_s=settings.heartbeat_ttl_s, min_stake=minimum)]

    # one read of the provider table per ONLINE_CACHE_S however many estimates arrive (a POST anyone may send)
    cached = getattr(state, "webapp_online", None)
    if cached is not None and time.monotonic() - cached[0] < ONLINE_CACHE_S:
        online = cached[1]
    else:
        online = await run_in_threadpool(online_providers)
        state.webapp_online = (time.monotonic(), online)
    runtimes = [r for r in online if spec.runtime in (r.runtimes or [])]
    try:
        fee_bps = await run_in_threadpool(state.fee_oracle.fee_bps)
    except HashgridError:
        fee_bps = 0
    found = estimate_from_prices(spec, [r.prices or {} for r in runtimes], fee_bps=fee_bps)
    notes = list(found.notes)
    if not online:
        notes.insert(0, "no provider is online")
    elif not runtimes:
        notes.insert(0, f"no online provider runs the {spec.runtime} runtime")
    return {"low": str(found.low), "high": str(found.high), "escrow": str(found.escrow),
            "fee_bps": found.fee_bps, "providers": found.providers, "online": len(online), "notes": notes}


@router.get("/{name}")
def asset(name: str, request: Request) -> Response:
    return _asset(webapp_dir(request.app.state.settings), name)
