"""`hashgrid provider exec` on the samples, as separate processes: the same hash on every run and in every
process, agreement reported by --repeat, and clear one-line failures that leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from scripts.make_examples import IMAGES_FILE, generate

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ["wasm", "shell", "ai"]


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of examples/ with specs generated from the templates (images and module: make setup)."""
    target = tmp_path_factory.mktemp("examples")
    for name in ("templates", "data", "ai", "wasm"):
        shutil.copytree(ROOT / "examples" / name, target / name)
    generate(examples=target, images_file=IMAGES_FILE)
    return target


def hashgrid(*args: str, state: Path, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HASHGRID_STATE_DIR=str(state), COLUMNS="200")
    env.pop("HASHGRID_PROVIDER_KEY", None)
    extra = ["--config", str(config)] if config else []
    return subprocess.run([sys.executable, "-m", "hashgrid.cli", "provider", *args, *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def exec_json(spec: Path, state: Path, *more: str, config: Path | None = None) -> dict[str, Any]:
    completed = hashgrid("exec", str(spec), "--json", *more, state=state, config=config)
    assert completed.returncode == 0, completed.stderr + completed.stdout
    return json.loads(completed.stdout)


def assert_nothing_left(state: Path) -> None:
    work = state / "provider" / "work"
    assert not work.exists() or list(work.iterdir()) == [], list(work.iterdir())
    tmp = state / "provider" / "content" / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []
    client = docker.from_env()
    ours = [c for c in client.containers.list(all=True, filters={"label": "hashgrid.run_id"})
            if c.labels.get("hashgrid.run_id", "").startswith("hg-")]  # the executor's run ids only
    assert ours == []


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_gives_the_same_hash_in_two_processes(sample: str, examples: Path, tmp_path: Path) -> None:
    first = exec_json(examples / f"{sample}.yaml", tmp_path / "one")
    second = exec_json(examples / f"{sample}.yaml", tmp_path / "two")
    assert first["runs"][0]["exit_code"] == 0, first["runs"][0]["logs"]
    assert first["result_hash"] == second["result_hash"]
    assert first["result_hash"].startswith("0x") and len(first["result_hash"]) == 66
    outputs = first["runs"][0]["result"]["outputs"]
    assert outputs and not any(entry.get("absent") for entry in outputs)
    assert_nothing_left(tmp_path / "one")


@pytest.mark.parametrize("sample", ["wasm", "shell"])
def test_repeat_reports_agreement(sample: str, examples: Path, tmp_path: Path) -> None:
    completed = hashgrid("exec", str(examples / f"{sample}.yaml"), "--repeat", "3", state=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "all 3 runs agree" in completed.stdout
    assert completed.stdout.count("result hash") == 3


def test_ai_sample_trains_and_agrees_on_repeat(examples: Path, tmp_path: Path) -> None:
    report = exec_json(examples / "ai.yaml", tmp_path, "--repeat", "3")
    assert report["agree"] is True and len({run["result_hash"] for run in report["runs"]}) == 1
    assert "accuracy" in report["runs"][0]["logs"]


def _config(path: Path, **policy: Any) -> Path:
    images = json.loads(IMAGES_FILE.read_text())
    lines = ["[policy]", f"allowed_images = {json.dumps(list(images.values()))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in policy.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_shell_sample_same_hash_under_docker_and_runsc(examples: Path, tmp_path: Path) -> None:
    spec = examples / "shell.yaml"
    plain = exec_json(spec, tmp_path, config=_config(tmp_path / "a.toml", docker_runtime="docker"))
    gvisor = exec_json(spec, tmp_path, config=_config(tmp_path / "b.toml", docker_runtime="runsc"))
    assert plain["runs"][0]["runtime"] == "docker" and gvisor["runs"][0]["runtime"] == "runsc"
    assert plain["result_hash"] == gvisor["result_hash"]


def _write_spec(path: Path, examples: Path, **changes: Any) -> Path:
    import yaml

    data = yaml.safe_load((examples / "shell.yaml").read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def test_nondeterministic_spec_is_reported(examples: Path, tmp_path: Path) -> None:
    spec = _write_spec(tmp_path / "random.yaml", examples, inputs=[], outputs=["r"], include_stdout=False,
                       command=["sh", "-c", "head -c 16 /dev/urandom > /out/r"])
    completed = hashgrid("exec", str(spec), "--repeat", "2", state=tmp_path / "state")
    assert completed.returncode == 3
    assert "disagree" in completed.stderr and "not deterministic" in completed.stderr


def test_failing_task_exit_code(examples: Path, tmp_path: Path) -> None:
    spec = _write_spec(tmp_path / "fail.yaml", examples, inputs=[], command=["sh", "-c", "exit 7"])
    completed = hashgrid("exec", str(spec), state=tmp_path / "state")
    assert completed.returncode == 1
    assert "the task failed: exit code 7" in completed.stderr


def test_missing_image_is_a_clear_error(examples: Path, tmp_path: Path) -> None:
    absent = "sha256:" + "0" * 64
    spec = _write_spec(tmp_path / "noimage.yaml", examples, image=absent)
    completed = hashgrid("exec", str(spec), "--input-dir", str(examples / "data"), state=tmp_path / "state")
    assert completed.returncode == 2
    assert "image_not_found" in completed.stderr and "0000000000" in completed.stderr
    assert_nothing_left(tmp_path / "state")


def test_input_with_wrong_content_is_refused_and_nothing_is_left(examples: Path, tmp_path: Path) -> None:
    spec = _write_spec(tmp_path / "spec.yaml", examples)
    (tmp_path / "words.txt").write_text("not the words the spec names\n")  # its spec path, wrong bytes
    completed = hashgrid("exec", str(spec), state=tmp_path / "state")
    assert completed.returncode == 2
    expected = spec.read_text().split("sha256: ")[1].split()[0].strip("'\"")
    assert "digest_mismatch" in completed.stderr and expected in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    store = tmp_path / "state" / "provider" / "content"
    assert [p for p in store.rglob("*") if p.is_file()] == []
    assert_nothing_left(tmp_path / "state")


def test_missing_input_named(examples: Path, tmp_path: Path) -> None:
    spec = _write_spec(tmp_path / "spec.yaml", examples,
                       inputs=[{"path": "nowhere.txt", "sha256": "ab" * 32, "size": 3}])
    completed = hashgrid("exec", str(spec), state=tmp_path / "state")
    assert completed.returncode == 2
    assert "content_missing" in completed.stderr and "nowhere.txt" in completed.stderr


def test_malformed_spec_is_one_clear_line(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("version: 1\nname: bad\nruntime: vm\n")
    completed = hashgrid("exec", str(spec), state=tmp_path / "state")
    assert completed.returncode == 2
    assert "spec_invalid" in completed.stderr and "unknown runtime 'vm'" in completed.stderr


def test_policy_refusal_from_config(examples: Path, tmp_path: Path) -> None:
    config = tmp_path / "provider.toml"
    config.write_text("[policy]\nallowed_images = []\n")
    completed = hashgrid("exec", str(examples / "shell.yaml"), state=tmp_path / "state", config=config)
    assert completed.returncode == 2
    assert "policy_refused" in completed.stderr and "not in allowed_images" in completed.stderr
