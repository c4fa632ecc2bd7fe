"""`hashgrid provider check-gpu`: what a provider runs after installing, to see whether its GPUs will sell.

It detects the GPUs (NVML, nvidia-smi), asks the engine how it would attach one, starts a probe container with
each GPU, runs the GPU example twice in the sandbox on one GPU and compares the result hashes, and prints a
short table. `--host` also runs the example's training step outside any sandbox (twice on the GPU, once on the
CPU) to show what the deterministic settings buy on this GPU. Imports stay light (no chain, no pydantic
until a sandbox run is possible) so the check runs on a bare GPU machine with `python3 -m provider.gpucheck`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from provider import gpu

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SPEC = ROOT / "examples" / "gpu.yaml"
TRAIN_STEP = ROOT / "examples" / "gpu" / "train_step.py"


@dataclass
class Row:
    """One line of the report: a step, what it found, and whether that is good for selling GPUs."""

    step: str
    detail: str
    ok: bool | None  # None: informational


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, step: str, detail: str, ok: bool | None = None) -> None:
        self.rows.append(Row(step, detail, ok))

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(row.ok is not False for row in self.rows)

    def text(self) -> str:
        width = max(len(row.step) for row in self.rows) if self.rows else 0
        marks = {True: "ok  ", False: "FAIL", None: "    "}
        return "\n".join(f"{marks[row.ok]} {row.step.ljust(width)}  {row.detail}" for row in self.rows)


def outputs_digest(directory: Path) -> str:
    """sha256 over the output files' names and contents (sorted): equal outputs, equal digest."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def check_detect(report: Report) -> list[gpu.Gpu]:
    scan = gpu.scan()
    if not scan.gpus:
        report.add("detect", f"no GPU ({scan.note})", False)
        return []
    for found in scan.gpus:
        report.add("detect", f"GPU {found.index} {found.model}, {found.memory_mb} MB, driver {found.driver}, "
                             f"CUDA {found.cuda_major} ({found.source}, {found.uuid})", True)
    return scan.gpus


def check_attach(report: Report, gpus: list[gpu.Gpu]) -> dict[str, gpu.AttachSupport]:
    info, why = gpu.engine_info()
    support = gpu.attach_support(info, why)
    for name, item in support.items():
        report.add(f"attach ({name})", f"via {item.method}" if item.method else str(item.reason),
                   True if item.method else (False if name == "docker" else None))
    if info is None:
        return support
    from provider.runtimes import get_runtime

    for name, item in support.items():
        if item.method is None:
            continue
        runtime = get_runtime(name)
        if not runtime.available():
            report.add(f"probe ({name})", f"the {name} backend does not work here", False)
            continue
        for found in gpus:
            failure = runtime.probe_gpu(found.uuid)  # type: ignore[attr-defined]
            seen = failure or "the container sees the device"
            report.add(f"probe ({name})", f"GPU {found.index}: {seen}", failure is None)
    return support


def check_sandbox(report: Report, gpus: list[gpu.Gpu], support: dict[str, gpu.AttachSupport], *,
                  spec_path: Path, runs: int, workdir: Path) -> None:
    """The example twice in the sandbox on GPU 0; the result hashes must agree."""
    if not gpus or not any(item.method for item in support.values()):
        report.add("sandbox runs", "skipped: no GPU can be attached here", None)
        return
    if not spec_path.is_file():
        report.add("sandbox runs", f"skipped: {spec_path} does not exist (build the image with "
                                   "scripts/build_images.sh --only pytorch-gpu, then python -m "
                                   "scripts.make_examples)", False)
        return
    from hashgrid.content import ContentStore
    from hashgrid.errors import HashgridError
    from hashgrid.spec import load_spec
    from provider.detect import detect
    from provider.executor import execute
    from provider.policy import Policy

    spec = load_spec(spec_path)
    device = detect(workdir, volatile=False)
    store = ContentStore(workdir / "check-gpu-store")
    for blob in spec.inputs:
        candidates = [spec_path.parent / blob.path, spec_path.parent / "gpu" / blob.path]
        source = next((c for c in candidates if c.is_file()), None)
        if source is None:
            report.add("sandbox runs", f"input {blob.path} not found next to {spec_path}", False)
            return
        store.put_file(source, what=f"input {blob.path}")
    need = spec.resources
    policy = Policy(allow_any_image=True, max_cpus=need.cpus, max_memory_mb=need.memory_mb,
                    max_disk_mb=need.disk_mb, max_timeout_s=need.timeout_s, max_pids=need.pids,
                    max_gpus=need.gpus)
    hashes = []
    for attempt in range(1, runs + 1):
        try:
            execution = execute(spec, store=store, policy=policy, workdir=workdir, device=device)
        except HashgridError as exc:
            report.add(f"sandbox run {attempt}", f"{exc.code}: {exc.message}", False)
            return
        usage = execution.usage
        hashes.append(execution.result_hash.hex)
        report.add(f"sandbox run {attempt}", f"{execution.runtime}: exit {execution.exit_code}, result "
                   f"{execution.result_hash.hex[:18]}..., {usage.gpu_seconds} GPU-s, "
                   f"{usage.gpu_utilization_pct}% busy, {usage.gpu_memory_peak_mb} MB peak",
                   execution.exit_code == 0 and usage.gpu_seconds > 0)
    report.add("sandbox agree", f"{len(set(hashes))} distinct result hash(es) in {runs} runs",
               len(set(hashes)) == 1)


def check_host(report: Report, *, python: str, steps: int) -> None:
    """The training step outside any sandbox: twice on the GPU and once on the CPU, deterministic env set."""
    env = {**os.environ, **gpu.DETERMINISTIC_GPU_ENV}
    digests: dict[str, str] = {}
    for label, device in (("gpu run 1", "cuda"), ("gpu run 2", "cuda"), ("cpu run", "cpu")):
        with tempfile.TemporaryDirectory(prefix="hashgrid-check-gpu-") as out:
            completed = subprocess.run([python, str(TRAIN_STEP), "--device", device, "--out", out,
                                        "--steps", str(steps)], capture_output=True, text=True, env=env,
                                       timeout=600, check=False)
            if completed.returncode != 0:
                report.add(f"host {label}", f"exit {completed.returncode}: {completed.stderr.strip()[-300:]}",
                           False)
                return
            digests[label] = outputs_digest(Path(out))
            report.add(f"host {label}", f"outputs {digests[label][:16]}...  {completed.stdout.strip()}", None)
    same_gpu = digests["gpu run 1"] == digests["gpu run 2"]
    report.add("host gpu agree", "the two GPU runs are bit-identical" if same_gpu else
               "the two GPU runs DIFFER", same_gpu)
    report.add("host cpu vs gpu", "the CPU run is identical to the GPU runs"
               if digests["cpu run"] == digests["gpu run 1"] else
               "the CPU run differs from the GPU runs (expected: replicas must share a GPU model)", None)


def run_check(*, spec_path: Path = EXAMPLE_SPEC, runs: int = 2, host_python: str | None = None,
              steps: int = 20, workdir: Path | None = None) -> Report:
    """Every step that can run here; a step that cannot says why."""
    report = Report()
    gpus = check_detect(report)
    support = check_attach(report, gpus)
    with tempfile.TemporaryDirectory(prefix="hashgrid-check-gpu-") as tmp:
        check_sandbox(report, gpus, support, spec_path=spec_path, runs=runs, workdir=workdir or Path(tmp))
    if host_python is not None:
        if gpus:
            check_host(report, python=host_python, steps=steps)
        else:
            report.add("host runs", "skipped: no GPU detected", None)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that this device's GPUs can be sold.")
    parser.add_argument("--spec", type=Path, default=EXAMPLE_SPEC)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--host", action="store_true", help="also run the training step outside the sandbox")
    parser.add_argument("--python", default=sys.executable, help="python with torch, for --host")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    report = run_check(spec_path=args.spec, runs=args.runs, host_python=args.python if args.host else None,
                       steps=args.steps)
    print(report.text())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
