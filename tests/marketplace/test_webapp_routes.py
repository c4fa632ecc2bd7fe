"""The web app's routes under /app (marketplace/api/routes/webapp.py) as a stranger sees them: only the built
files by plain name, under the app's own CSP; the chain config; public example templates only; a price
estimate whose hostile bodies are 4xx, never 500. The browser journey is tests/e2e/test_webapp.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.api.chain import StaticFeeOracle, StaticStakeOracle
from marketplace.settings import MarketplaceSettings
from tests.marketplace.conftest import FEE_BPS

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def wasm_spec(**overrides: Any) -> dict[str, Any]:
    document = {"version": 1, "name": "t", "runtime": "wasm", "module": "ab" * 32, "command": ["m.wasm"],
                "resources": {"cpus": 1, "memory_mb": 64, "disk_mb": 4, "timeout_s": 30},
                "replicas": 1, "quorum": 1, "max_price_per_replica": "1000", "deadline_s": 3600}
    document.update(overrides)
    return document


@pytest.fixture
def built(tmp_path: Path) -> Path:
    root = tmp_path / "webapp"
    root.mkdir()
    (root / "index.html").write_text('<div id="root"></div>')
    (root / "app.js").write_text("console.log(1)")
    (root / ".hashgrid-stamp").write_text("secret-ish")
    (tmp_path / "outside.txt").write_text("not served")
    return root


@pytest.fixture
def app_client(settings: MarketplaceSettings, built: Path, stakes: StaticStakeOracle) -> Any:
    settings = settings.model_copy(update={"webapp_dir": built})
    app = create_app(settings, stake_oracle=stakes, fee_oracle=StaticFeeOracle(FEE_BPS))
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def test_only_built_files_are_served_under_the_apps_csp(app_client: TestClient) -> None:
    page = app_client.get("/app/")
    assert page.status_code == 200 and page.text == '<div id="root"></div>'
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe" not in csp
    assert app_client.get("/app/app.js").headers["content-type"].startswith("text/javascript")
    for name in (".hashgrid-stamp", "..%2Foutside.txt", "%2e%2e%2foutside.txt", "missing.js", "a%00.js"):
        assert app_client.get(f"/app/{name}").status_code == 404, name
    assert app_client.get("/app/../outside.txt").status_code == 404
    assert app_client.get("/health").headers["content-security-policy"].startswith("default-src 'none'")


def test_config_without_a_deployment_is_404(app_client: TestClient) -> None:
    answer = app_client.get("/app/config.json")
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"


def test_templates_name_only_public_example_files(app_client: TestClient) -> None:
    templates = app_client.get("/app/templates.json").json()["data"]
    for template in templates:
        for sha in template["files"]:
            assert app_client.get(f"/app/templates/files/{sha}").status_code == 200
    assert app_client.get("/app/templates/files/" + "0" * 64).status_code == 404
    assert app_client.get("/app/templates/files/../../pyproject.toml").status_code == 404
    assert app_client.get("/app/templates/files/XYZ").status_code == 422


def test_estimate_with_nobody_online_says_so(app_client: TestClient) -> None:
    answer = app_client.post("/app/estimate", json=wasm_spec())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["providers"] == 0 and body["online"] == 0
    assert body["notes"][0] == "no provider is online"
    assert int(body["escrow"]) > 0 and body["fee_bps"] == FEE_BPS


@pytest.mark.parametrize("body, status", [
    (b"not json", 422),
    (b'{"a": 1, "a": 2}', 422),
    (b"[" * 100 + b"]" * 100, 422),
    (json.dumps(wasm_spec(quorum=5)).encode(), 422),
    (json.dumps({"version": 1}).encode(), 422),
    (b"x" * (1024 * 1024 + 1), 413),
])
def test_hostile_estimate_bodies_are_4xx(app_client: TestClient, body: bytes, status: int) -> None:
    answer = app_client.post("/app/estimate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
