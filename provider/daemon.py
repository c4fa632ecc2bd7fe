"""`hashgrid provider run`: the loop that turns assignments into committed and revealed results.

Register capabilities, check stake, then repeat: take assignments from the feed into the journal, fetch and
verify each spec, apply the policy, run tasks in worker threads within the offered cores and memory, sign
the usage, commit (batched), reveal once reveals open (batched). The journal (provider/journal.py) and the
chain are checked before every commit and reveal, so a restart resumes without committing twice.
Design and crash-safety argument: docs/provider-daemon.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct

from hashgrid.canonical import canonical_json, to_hex32
from hashgrid.chain.contracts import ReplicaState, TaskState
from hashgrid.content import ContentStore
from hashgrid.errors import (
    ChainError,
    ContentMissing,
    ContractRevert,
    HashgridError,
    PolicyRefused,
)
from hashgrid.runtime_class import BACKEND_CLASS, class_of_task
from hashgrid.spec import TaskSpec, parse_spec_bytes, spec_hash
from provider.chain_ops import ChainOps, CommitItem, TaskView
from provider.config import ProviderConfig
from provider.executor import execute
from provider.feed import AssignmentFeed
from provider.gpu import GpuPool
from provider.journal import Entry, Journal, Phase
from provider.marketplace_client import MarketplaceReporter
from provider.outbox import ReportKind
from provider.policy import check, choose_runtime

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.sqlite"
FAULT_EXIT_CODE = 86  # the exit status of an injected crash, so a test can tell it from a real one
STDOUT_OUTPUT = "stdout"  # the manifest entry of stdout when the spec counts it (include_stdout)
COMMIT_MARGIN_S = 30  # commit without waiting for the reports' delivery when the window has this little left


class Fault(StrEnum):
    """TEST/DEMO FAULTS ONLY: deliberate misbehaviour, to show the protocol catching it. Never in production.

    dishonest: commit and reveal a wrong result hash, its own (the verifier must see a dissent and slash it).
    crash-after-commit: exit abruptly right after a commit transaction is mined, before the journal records
    it (the journal is then behind the chain; the restart must notice and not commit again).
    copycat: discard its own run, wait for the other replicas to commit, try every read path of the
    marketplace API for their results (provider/copycat.py) and commit what it learns, else a wrong hash.
    """

    DISHONEST = "dishonest"
    CRASH_AFTER_COMMIT = "crash-after-commit"
    COPYCAT = "copycat"


class InsufficientStake(HashgridError):
    """The provider's stake is under the registry's minimum: the matcher would never assign it work."""

    code = "provider_stake_too_low"
    component = "provider"
    http_status = 409


@dataclass
class DaemonOptions:
    """How one daemon runs; the CLI fills it from flags and the provider config."""

    state_dir: Path  # the journal and task logs
    content_dir: Path  # specs, inputs, modules in; outputs and usage reports out
    workdir: Path  # run scratch dirs
    max_parallel: int | None = None  # default: the offered cores
    poll_interval: float = 1.0
    grace_period: float = 30.0  # at shutdown, how long running tasks may finish before they are cancelled
    confirmations: int = 0
    capabilities_uri: str | None = None
    heartbeat_interval: float = 3.0  # the marketplace counts a provider dead after 10 s without one
    stake_check_interval: float = 30.0
    claim_interval: float | None = None  # seconds between withdrawals of escrow credits (None: never)
    fault: Fault | None = None


@dataclass
class _Running:
    task_id: int
    run_id: str
    runtime: str
    cpus: float
    memory_mb: int
    gpus: tuple[str, ...] = ()  # GPU UUIDs reserved for this run alone until it ends
    thread: threading.Thread | None = None
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)


def usage_report(private_key: str, *, task_id: int, provider: str, usage: dict[str, Any],
                 result_hash: bytes) -> dict[str, Any]:
    """The signed usage report billing reads: an EIP-191 signature over the canonical JSON of
    {task_id, provider, usage, result_hash}, so usage cannot be altered after the fact."""
    document = {"task_id": task_id, "provider": provider.lower(), "usage": usage,
                "result_hash": to_hex32(result_hash)}
    signed = Account.sign_message(encode_defunct(primitive=canonical_json(document)), private_key)
    signature = signed.signature.hex()
    return {"report": document, "signature": signature if signature.startswith("0x") else "0x" + signature}


def usage_report_signer(report: dict[str, Any]) -> str:
    """The address that signed a usage report (compare it with report['report']['provider'])."""
    message = encode_defunct(primitive=canonical_json(report["report"]))
    return str(Account.recover_message(message, signature=report["signature"])).lower()


def capabilities_uri_for(address: str) -> str:
    return f"hashgrid://provider/{address.lower()}"


class Daemon:
    """One provider's loop. `run()` blocks until `request_stop()` (the CLI wires SIGTERM/SIGINT to it)."""

    def __init__(self, *, config: ProviderConfig, ops: ChainOps, feed: AssignmentFeed, journal: Journal,
                 store: ContentStore, options: DaemonOptions, private_key: str,
                 device: dict[str, Any] | None = None,
                 heartbeat: Callable[[dict[str, Any]], None] | None = None,
                 reporter: MarketplaceReporter | None = None) -> None:
        self.config = config
        self.ops = ops
        self.feed = feed
        self.journal = journal
        self.store = store
        self.options = options
        self._key = private_key
        self.device = device
        self.reporter = reporter  # None: chain-only mode (nothing is reported over HTTP)
        self._heartbeat_hook = heartbeat or (reporter.heartbeat if reporter is not None
                                             else lambda beat: log.debug("heartbeat %s", beat))
        self.max_parallel = options.max_parallel or config.offer.cores
        self.logs_dir = options.state_dir / "logs"
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stop_at: float | None = None
        self._finished = threading.Event()  # the loop ended: the heartbeat thread stops
        self._last_stake_check = 0.0
        self._beats: threading.Thread | None = None
        self._eligible = True  # the stake was checked at start; each heartbeat checks it again
        self._last_claim = time.monotonic()
        self._waiting: set[int] = set()  # received tasks that cannot start yet (content not there)
        self._gpus = GpuPool([])  # the offered GPUs (attachable, at most offer.gpus of them)

    # ------------------------------------------------------------------ start-up
    def start(self) -> None:
        """Bind the journal, requeue interrupted runs, register capabilities, check the stake."""
        from provider.detect import capabilities_hash, detect

        self.journal.bind("escrow", self.ops.escrow_address)
        self.journal.bind("provider", self.ops.address)
        for task_id in self.journal.requeue_interrupted():
            log.info("task %d: was running when the daemon stopped; it will run again", task_id)
        self._sweep_leftovers()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.options.workdir.mkdir(parents=True, exist_ok=True)
        if self.device is None:
            self.device = detect(self.options.workdir, volatile=False)
        offered = [str(g["uuid"]) for g in self.device.get("gpus") or []]
        self._gpus = GpuPool(offered[: self.config.offer.gpus])
        digest = capabilities_hash(self.device)
        uri = self.options.capabilities_uri or capabilities_uri_for(self.ops.address)
        if self.ops.ensure_registered(digest, uri):
            log.info("registered %s: capabilities %s (%s)", self.ops.address, to_hex32(digest), uri)
        stake, minimum = self.ops.stake()
        if stake < minimum:
            raise InsufficientStake(f"provider {self.ops.address} stakes {grid(stake)}, under the minimum "
                                    f"{grid(minimum)}; stake more with `hashgrid provider stake AMOUNT`",
                                    provider=self.ops.address, stake=stake, minimum=minimum)
        if self.reporter is not None:
            self.reporter.start(on_delivered=lambda _task_id: self._wake.set())
            self.reporter.register(device=self.device, config=self.config)
        log.info("provider %s: stake %s (minimum %s), runtimes %s, up to %d task(s) at once on %d "
                 "core(s) / %d MB", self.ops.address, grid(stake), grid(minimum),
                 ", ".join(self.device["runtimes"]), self.max_parallel, self.config.offer.cores,
                 self.config.offer.memory_mb)

    @property
    def run_prefix(self) -> str:
        """The start of every run id this provider makes: its containers and scratch dirs carry it, so a
        restart can tell its own leftovers from other providers' on the same host."""
        return f"hg-{self.ops.address.lower().removeprefix('0x')[:10]}-"

    def _sweep_leftovers(self) -> None:
        """Remove the containers, tmpfs mounts and scratch dirs of runs a killed predecessor left (none of
        this provider's runs is live before the loop starts; their tasks were just requeued)."""
        from provider.runtimes.leftovers import sweep

        try:
            removed = sweep(self.run_prefix)
        except Exception:  # a sweep that fails must not keep the provider down; the next start retries
            log.exception("could not sweep the runs a previous daemon left")
            return
        for item in removed:
            log.warning("removed a leftover of a previous daemon: %s", item)

    # ------------------------------------------------------------------ the loop
    def request_stop(self) -> None:
        """Stop taking work; running tasks get the grace period. A second request cancels them at once."""
        if self._stop.is_set():
            self._stop_at = time.monotonic()
            log.warning("second stop request: cancelling running tasks now")
        else:
            self._stop_at = time.monotonic() + self.options.grace_period
            log.info("stopping: no new work; %d running task(s) get %gs to finish", len(self._running),
                     self.options.grace_period)
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, once: bool = False) -> int:
        """Run until stopped (or, with `once`, until nothing pending can progress here); returns 0."""
        self.start()
        while True:
            self._step_safely(once=once)
            with self._lock:
                running = len(self._running)
            if self.stopping and running == 0:
                self._step_safely(once=once)  # commit/reveal what finished during the grace period
                break
            if once and running == 0 and self._idle():
                break
            self._wake.wait(self.options.poll_interval)
            self._wake.clear()
        self._finished.set()
        if self._beats is not None:
            self._beats.join(timeout=10)
        if self.reporter is not None:
            self.reporter.close()  # a few seconds to deliver; what is left stays in the journal
        log.info("daemon stopped")
        return 0

    def _step_safely(self, *, once: bool) -> None:
        """One pass; a chain outage only delays (the next pass retries)."""
        try:
            self.step()
        except ChainError as exc:
            log.warning("chain unavailable, retrying: %s", exc.message)

    def step(self) -> None:
        """One pass of the loop: intake, schedule, commit, reveal, heartbeat."""
        if not self.stopping:
            self._intake()
            self._schedule()
        elif self._stop_at is not None and time.monotonic() >= self._stop_at:
            self._cancel_running()
        self._commit_ready()
        self._reveal_ready()
        self._heartbeat()
        self._claim_credits()

    def _idle(self) -> bool:
        """Nothing this daemon can do now: no runnable received task, nothing executed but uncommitted."""
        received = [e for e in self.journal.in_phase(Phase.RECEIVED) if e.task_id not in self._waiting]
        return not received and not self.journal.in_phase(Phase.EXECUTED)

    # ------------------------------------------------------------------ intake
    def _intake(self) -> None:
        for assignment in self.feed.poll():
            if self.journal.add(assignment.task_id, source=assignment.source, spec_hash=assignment.spec_hash,
                                runtime_class=assignment.runtime_class):
                log.info("task %d: assigned (%s)", assignment.task_id, assignment.source)
            self.feed.ack(assignment)

    # ------------------------------------------------------------------ scheduling and running
    def _free(self) -> tuple[float, int]:
        with self._lock:
            cpus = sum(r.cpus for r in self._running.values())
            memory = sum(r.memory_mb for r in self._running.values())
        return self.config.offer.cores - cpus, self.config.offer.memory_mb - memory

    def _schedule(self) -> None:
        self._waiting.clear()
        for entry in self.journal.in_phase(Phase.RECEIVED):
            with self._lock:
                if entry.task_id in self._running:
                    continue
                if len(self._running) >= self.max_parallel:
                    return
            spec = self._prepare(entry)
            if spec is None:
                continue
            free_cpus, free_memory = self._free()
            free_gpus = len(self._gpus.free())
            if (spec.resources.cpus > free_cpus or spec.resources.memory_mb > free_memory
                    or spec.resources.gpus > free_gpus):
                log.debug("task %d: waiting for %.2g cores / %d MB / %d GPU(s) (free %.2g / %d / %d)",
                          entry.task_id, spec.resources.cpus, spec.resources.memory_mb, spec.resources.gpus,
                          free_cpus, free_memory, free_gpus)
                self._waiting.add(entry.task_id)
                continue
            self._start(entry, spec)

    def _prepare(self, entry: Entry) -> TaskSpec | None:
        """Chain checks, spec fetch and verification, policy: the spec when the task may run, else None
        (with the task failed, refused, or left received to retry)."""
        task_id = entry.task_id
        task = self.ops.task(task_id)
        if task.state != TaskState.ASSIGNED:
            self._fail(task_id, f"task is {task.state.name} on chain, not ASSIGNED")
            return None
        replica = self.ops.my_replica_state(task_id)
        if replica != ReplicaState.ASSIGNED:
            if replica in (ReplicaState.COMMITTED, ReplicaState.REVEALED):
                self._fail(task_id, f"the chain has this provider's replica {replica.name} but the journal "
                                    "has no result for it (journal lost?)")
            else:
                self._fail(task_id, f"this provider's replica is {replica.name} on chain")
            return None
        if self.ops.now() > task.commit_deadline:
            self._fail(task_id, f"the commit window closed at {task.commit_deadline}")
            return None
        wanted = bytes.fromhex(entry.spec_hash) if entry.spec_hash else self.ops.spec_hash_of(task_id)
        try:
            raw = self.store.get_bytes(wanted.hex())
        except ContentMissing:
            self.journal.note(task_id, f"spec {to_hex32(wanted)} is not in the content store "
                                       f"{self.store.root}")
            log.info("task %d: spec %s not in %s yet; will retry", task_id, to_hex32(wanted), self.store.root)
            self._waiting.add(task_id)
            return None
        except HashgridError as exc:
            self._fail(task_id, f"spec {to_hex32(wanted)}: {exc.message}")
            return None
        try:
            spec = parse_spec_bytes(raw, source=f"spec {to_hex32(wanted)}")
        except HashgridError as exc:
            self._fail(task_id, exc.message)
            return None
        if spec_hash(spec) != wanted:
            self._fail(task_id, f"the spec blob {to_hex32(wanted)} is not in canonical form (its canonical "
                                f"hash is {to_hex32(spec_hash(spec))})")
            return None
        try:
            check(spec, self.config.policy, self.device)
            offer = self.config.offer
            if spec.resources.cpus > offer.cores or spec.resources.memory_mb > offer.memory_mb:
                raise PolicyRefused(f"the task needs {spec.resources.cpus} cores / "
                                    f"{spec.resources.memory_mb} MB; this provider offers {offer.cores} / "
                                    f"{offer.memory_mb} MB")
            if spec.resources.gpus > self._gpus.size:
                raise PolicyRefused(f"the task needs {spec.resources.gpus} GPU(s); this provider offers "
                                    f"{self._gpus.size} (offer.gpus = {offer.gpus})")
            backend = choose_runtime(spec, self.config.policy, self._available(), self.device)
            self._check_class(entry, spec, backend)
        except PolicyRefused as exc:
            self._refuse(task_id, exc.reason)
            return None
        return spec

    def _check_class(self, entry: Entry, spec: TaskSpec, backend: str) -> None:
        """Refuse a replica recorded in another runtime class than the one this daemon would run it in: its
        partners run in that class, and an honest run elsewhere could hash differently (docs/matching.md)."""
        if entry.runtime_class is None:  # chain-only feed, or a task placed before classes were recorded
            return
        assert self.device is not None
        mine = class_of_task(BACKEND_CLASS.get(backend, backend), gpu_task=spec.resources.gpus > 0,
                             gpus=self.device.get("gpus") or [])
        if mine != entry.runtime_class:
            raise PolicyRefused(f"the task's replicas run in runtime class {entry.runtime_class!r}; this "
                                f"provider would run it in {mine!r}")

    def _available(self) -> list[str]:
        assert self.device is not None
        return list(self.device["runtimes"])

    def _start(self, entry: Entry, spec: TaskSpec) -> None:
        task_id = entry.task_id
        if not self.journal.mark_running(task_id):
            return
        runtime = choose_runtime(spec, self.config.policy, self._available(), self.device)
        run_id = f"{self.run_prefix}t{task_id}-{uuid.uuid4().hex[:10]}"
        gpus = self._gpus.reserve(run_id, spec.resources.gpus)
        if gpus is None:  # _schedule checked; only this (main) thread reserves, so this is a bug if seen
            self.journal.requeue(task_id, "its GPUs were taken")
            return
        running = _Running(task_id=task_id, run_id=run_id, runtime=runtime, cpus=spec.resources.cpus,
                           memory_mb=spec.resources.memory_mb, gpus=gpus)
        running.thread = threading.Thread(target=self._work, args=(running, spec), name=f"task-{task_id}",
                                          daemon=True)
        with self._lock:
            self._running[task_id] = running
        log.info("task %d: running %s on %s (run %s, attempt %d)", task_id, spec.name, runtime,
                 running.run_id, entry.runs + 1)
        running.thread.start()

    def _work(self, running: _Running, spec: TaskSpec) -> None:
        """A worker thread: run the task, sign its usage, journal the result (never touches the chain)."""
        task_id = running.task_id
        log_path = self.logs_dir / f"task-{task_id}.log"
        reporter = self.reporter
        manifest: list[dict[str, Any]] = []
        try:
            if reporter is not None:
                reporter.running(task_id)
            with log_path.open("wb") as sink:

                def on_log(chunk: bytes) -> None:
                    sink.write(chunk)
                    if reporter is not None:
                        reporter.log(task_id, chunk)

                def on_outputs(output_dir: Path) -> None:
                    manifest.extend(self._save_outputs(output_dir))

                execution = execute(spec, store=self.store, policy=self.config.policy,
                                    workdir=self.options.workdir, device=self.device,
                                    available=[running.runtime],  # the backend its class was checked for
                                    on_log=on_log, run_id=running.run_id,
                                    on_outputs=on_outputs, gpus=running.gpus)
            if running.cancelled:
                self.journal.requeue(task_id, "cancelled at shutdown")
                log.info("task %d: cancelled; it stays received and runs again after a restart", task_id)
                return
            if spec.include_stdout:
                manifest.extend(self._save_stdout(execution.run_result.stdout, manifest, task_id))
            result_hash = execution.result_hash.digest
            if self.options.fault == Fault.DISHONEST:
                # a wrong answer of its own (two dishonest providers disagree, as independent faults do)
                result_hash = hashlib.sha256(b"hashgrid fault: dishonest" + bytes.fromhex(
                    self.ops.address.removeprefix("0x")) + result_hash).digest()
                log.warning("task %d: FAULT INJECTION (dishonest): will commit %s instead of %s", task_id,
                            to_hex32(result_hash), execution.result_hash.hex)
            elif self.options.fault == Fault.COPYCAT:
                result_hash = self._copy(task_id, spec, guesses=[item["sha256"] for item in manifest])
                manifest = []  # it stands for a provider that ran nothing: no outputs of its own to report
            usage = execution.usage.to_dict()
            report = usage_report(self._key, task_id=task_id, provider=self.ops.address, usage=usage,
                                  result_hash=result_hash)
            report_sha = self.store.put_bytes(canonical_json(report), what=f"usage report of task {task_id}")
            self.store.put_bytes(canonical_json(execution.result_hash.document),
                                 what=f"result document of task {task_id}")
            with self.journal.transaction():  # the result and its reports are journaled together
                if reporter is not None:  # queued; the main loop commits once they are delivered
                    reporter.executed(task_id, result_hash=result_hash, report=report, outputs=manifest)
                self.journal.record_execution(task_id, result_hash=result_hash, usage=usage,
                                              log_path=str(log_path), report_sha256=report_sha)
            status = f"exit {execution.exit_code}" + (f", killed: {execution.kill_reason}"
                                                      if execution.kill_reason else "")
            log.info("task %d: executed (%s) result %s, %.3fs wall, %.3f cpu-s", task_id, status,
                     to_hex32(result_hash), usage["wall_seconds"], usage["cpu_seconds"])
        except PolicyRefused as exc:
            self._refuse(task_id, exc.reason)
        except HashgridError as exc:
            if running.cancelled:
                self.journal.requeue(task_id, "cancelled at shutdown")
            else:
                self._fail(task_id, f"{exc.code}: {exc.message}")
        except Exception as exc:  # a bug or host problem: record it rather than kill the daemon
            log.exception("task %d: unexpected error", task_id)
            self._fail(task_id, f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            if reporter is not None:
                reporter.failed(task_id)  # flushes what is left of the log (a no-op after `executed`)
            with self._lock:
                self._running.pop(task_id, None)
            self._gpus.release(running.run_id)
            self._wake.set()

    def _copy(self, task_id: int, spec: TaskSpec, *, guesses: list[str]) -> bytes:
        """FAULT INJECTION (copycat): the hash to commit, learned from the marketplace or a wrong one."""
        from provider.copycat import Copycat, Learned, fallback_hash, wait_for_co_replicas

        def committed() -> tuple[int, int, int, int]:
            task = self.ops.task(task_id)
            return task.round_committed, task.round_size, self.ops.now(), task.commit_deadline

        learned = Learned(task_id=task_id)
        if self.reporter is not None and wait_for_co_replicas(committed=committed, wait=self._stop.wait):
            client = self.reporter.client
            me = self.ops.address.lower()
            co = [p.lower() for p in self.ops.contracts.escrow.replicas_of(task_id) if p.lower() != me]
            with httpx.Client(base_url=client.url, timeout=client.timeout) as anonymous:
                learned = Copycat(signed=client.http, anonymous=anonymous, address=me).learn(
                    task_id, spec, co_providers=co, guesses=guesses)
        best = learned.best()
        result_hash = (bytes.fromhex(best.removeprefix("0x")) if best
                       else fallback_hash(self.ops.address, task_id))
        learned.committed, learned.source = to_hex32(result_hash), ("learned" if best else "fallback")
        path = learned.save(self.options.state_dir / "copycat")
        log.warning("task %d: FAULT INJECTION (copycat): %d read(s), will commit %s (%s); see %s", task_id,
                    len(learned.attempts), learned.committed, learned.source, path)
        return result_hash

    def _save_outputs(self, output_dir: Path) -> list[dict[str, Any]]:
        """Put a run's output files into the content store (called by the executor before cleanup); returns
        their manifest [{path, sha256, size}]."""
        manifest = []
        for path in sorted(Path(output_dir).rglob("*")):
            if path.is_file() and not path.is_symlink():
                relative = str(path.relative_to(output_dir))
                digest = self.store.put_file(path, what=f"output {relative}")
                manifest.append({"path": relative, "sha256": digest, "size": path.stat().st_size})
        return manifest

    def _save_stdout(self, stdout: bytes, manifest: list[dict[str, Any]],
                     task_id: int) -> list[dict[str, Any]]:
        """Stdout that counts for the result hash (include_stdout) as a manifest entry named `stdout`, so the
        customer can download what was hashed; skipped when an output file already has that name."""
        if any(item["path"] == STDOUT_OUTPUT for item in manifest):
            log.warning("task %d: an output file is named %r: stdout is not listed among the outputs",
                        task_id, STDOUT_OUTPUT)
            return []
        digest = self.store.put_bytes(stdout, what=f"stdout of task {task_id}")
        return [{"path": STDOUT_OUTPUT, "sha256": digest, "size": len(stdout)}]

    def _cancel_running(self) -> None:
        from provider.runtimes import get_runtime

        with self._lock:
            targets = [r for r in self._running.values() if not r.cancelled]
        for running in targets:
            running.cancelled = True
            log.warning("task %d: grace period over, cancelling run %s", running.task_id, running.run_id)
            try:
                get_runtime(running.runtime).cancel(running.run_id)
            except Exception as exc:  # the run may not have started yet or already ended
                log.debug("cancel of %s: %s", running.run_id, exc)

    # ------------------------------------------------------------------ commit and reveal
    def _commit_ready(self) -> None:
        ready: list[CommitItem] = []
        for entry in self.journal.in_phase(Phase.EXECUTED):
            item = self._commit_item(entry)
            if item is not None:
                ready.append(item)
        if not ready:
            return
        try:
            tx = self.ops.commit(ready)
        except ContractRevert as exc:
            if len(ready) == 1:
                self._after_revert(ready[0].task_id, "commit", exc)
                return
            log.warning("commitMany of %d reverted (%s); committing one by one", len(ready), exc.message)
            for item in ready:
                try:
                    self._committed([item], self.ops.commit([item]))
                except ContractRevert as single:
                    self._after_revert(item.task_id, "commit", single)
            return
        self._committed(ready, tx)

    def _committed(self, items: list[CommitItem], tx: str) -> None:
        if self.options.fault == Fault.CRASH_AFTER_COMMIT:
            log.warning("FAULT INJECTION (crash-after-commit): exiting after %s, before journaling it", tx)
            logging.shutdown()
            os._exit(FAULT_EXIT_CODE)
        for item in items:
            self.journal.mark_committed(item.task_id, tx)
            log.info("task %d: committed (tx %s)", item.task_id, tx)

    def _commit_item(self, entry: Entry) -> CommitItem | None:
        """The commit to send for an executed task, after checking the chain; None when the chain says
        otherwise (already committed: the journal catches up; window closed or task over: failed)."""
        task_id = entry.task_id
        task = self.ops.task(task_id)
        replica = self.ops.my_replica_state(task_id)
        if replica in (ReplicaState.COMMITTED, ReplicaState.REVEALED) or (
                replica != ReplicaState.ASSIGNED and self.ops.commit_tx_of(task_id)):
            tx = self.ops.commit_tx_of(task_id)
            self.journal.mark_committed(task_id, tx)
            log.warning("task %d: already committed on chain (tx %s); the journal caught up", task_id, tx)
            return None
        if task.state != TaskState.ASSIGNED:
            self._fail(task_id, f"task is {task.state.name} on chain; too late to commit")
            return None
        if replica != ReplicaState.ASSIGNED:
            self._fail(task_id, f"this provider's replica is {replica.name} on chain; cannot commit")
            return None
        now = self.ops.now()
        if now >= task.commit_deadline:
            self._fail(task_id, f"the commit window closed at {task.commit_deadline}")
            return None
        if self._reports_pending(task_id, seconds_left=task.commit_deadline - now):
            return None
        if self._outputs_refused(task_id):
            return None
        assert entry.result_hash is not None
        return CommitItem(task_id, entry.result_hash, entry.salt)

    def _reports_pending(self, task_id: int, *, seconds_left: int) -> bool:
        """Hold a commit until the marketplace has this task's outputs, usage and `executed` (billing reads
        the usage when the replicas reveal), unless the commit window is about to close: the reports stay
        queued and arrive later, while a missed commit would make this provider a no-show."""
        if self.reporter is None:
            return False
        pending = self.reporter.pending(task_id)
        if not pending:
            return False
        if seconds_left <= COMMIT_MARGIN_S:
            log.warning("task %d: committing with %d report(s) not yet acknowledged by the marketplace: the "
                        "commit window closes in %ds (they stay queued)", task_id, pending, seconds_left)
            return False
        self.journal.note(task_id, f"waiting for the marketplace to acknowledge {pending} report(s) "
                                   "before committing")
        return True

    def _outputs_refused(self, task_id: int) -> bool:
        """The marketplace refused this replica's outputs for good (a blob over its cap, a manifest it cannot
        take): the customer could never get them, so no result is committed and nothing is paid for it. The
        replica is reported refused, with the marketplace's words, so the task is reassigned or refunded."""
        if self.reporter is None:
            return False
        refused = [r for r in self.reporter.outbox.rejected(task_id)
                   if r.kind in (ReportKind.BLOB, ReportKind.OUTPUTS)]
        if not refused:
            return False
        reason = (f"the marketplace refused this replica's outputs ({refused[0].kind}: {refused[0].error}); "
                  "no result is committed for outputs the customer cannot get")
        self._fail(task_id, reason)
        self.reporter.refused(task_id, reason)
        return True

    def _reveal_ready(self) -> None:
        ready: list[CommitItem] = []
        for entry in self.journal.in_phase(Phase.COMMITTED):
            item = self._reveal_item(entry)
            if item is not None:
                ready.append(item)
        if not ready:
            return
        try:
            tx = self.ops.reveal(ready)
        except ContractRevert as exc:
            if len(ready) == 1:
                self._after_revert(ready[0].task_id, "reveal", exc)
                return
            log.warning("revealMany of %d reverted (%s); revealing one by one", len(ready), exc.message)
            for item in ready:
                try:
                    self._revealed([item], self.ops.reveal([item]))
                except ContractRevert as single:
                    self._after_revert(item.task_id, "reveal", single)
            return
        self._revealed(ready, tx)

    def _revealed(self, items: list[CommitItem], tx: str) -> None:
        for item in items:
            self.journal.mark_revealed(item.task_id, tx)
            log.info("task %d: revealed %s (tx %s)", item.task_id, to_hex32(item.result_hash), tx)

    def _reveal_item(self, entry: Entry) -> CommitItem | None:
        task_id = entry.task_id
        replica = self.ops.my_replica_state(task_id)
        if replica != ReplicaState.COMMITTED:
            tx = self.ops.reveal_tx_of(task_id)
            if tx is not None:
                self.journal.mark_revealed(task_id, tx)
                log.warning("task %d: already revealed on chain (tx %s); the journal caught up", task_id, tx)
            else:
                self._fail(task_id, f"this provider's replica is {replica.name} on chain, never revealed")
            return None
        task = self.ops.task(task_id)
        if task.state != TaskState.ASSIGNED:
            self._fail(task_id, f"task is {task.state.name} on chain; too late to reveal")
            return None
        if self.ops.now() >= task.reveal_deadline:
            self._fail(task_id, f"the reveal window closed at {task.reveal_deadline}")
            return None
        if not self.ops.reveal_open(task):
            self._note_waiting(task)
            return None
        assert entry.result_hash is not None
        return CommitItem(task_id, entry.result_hash, entry.salt)

    def _note_waiting(self, task: TaskView) -> None:
        log.debug("task %d: committed; reveals open when every replica commits or at %d", task.task_id,
                  task.commit_deadline)

    def _after_revert(self, task_id: int, action: str, exc: ContractRevert) -> None:
        """A commit/reveal reverted: re-read the chain; a reveal that is merely not open yet waits."""
        if exc.error_name == "EscrowRevealNotOpen":
            log.debug("task %d: reveal not open yet", task_id)
            return
        entry = self.journal.get(task_id)
        if entry is not None:
            recheck = self._commit_item if action == "commit" else self._reveal_item
            if recheck(entry) is None:
                return  # the chain check caught the journal up or failed the task with the reason
        self._fail(task_id, f"{action} reverted: {exc.message}")

    # ------------------------------------------------------------------ bookkeeping
    def _refuse(self, task_id: int, reason: str) -> None:
        self.journal.refuse(task_id, reason)
        log.warning("task %d: refused: %s", task_id, reason)
        if self.reporter is not None:
            self.reporter.refused(task_id, reason)

    def _fail(self, task_id: int, reason: str) -> None:
        if self.journal.fail(task_id, reason):
            log.warning("task %d: failed: %s", task_id, reason)

    def _claim_credits(self) -> None:
        """Every `claim_interval` seconds, withdraw what finalize credited this provider in the escrow (one
        claim covers every task settled since the last)."""
        interval = self.options.claim_interval
        now = time.monotonic()
        if interval is None or now - self._last_claim < interval:
            return
        self._last_claim = now
        if self.ops.claimable() == 0:
            return
        try:
            amount, tx = self.ops.claim()
        except ContractRevert as exc:
            log.warning("claim reverted: %s", exc.message)
            return
        log.info("claimed %d wei of escrow credits (tx %s)", amount, tx)

    def _heartbeat(self) -> None:
        """Start the heartbeat thread once; re-check the stake every `stake_check_interval` (a chain read)."""
        if self._beats is None:
            self._beats = threading.Thread(target=self._beat_loop, name="heartbeat", daemon=True)
            self._beats.start()
        now = time.monotonic()
        if now - self._last_stake_check >= self.options.stake_check_interval:
            self._last_stake_check = now
            self._check_stake()

    def _beat_loop(self) -> None:
        """Heartbeats on their own thread, every `heartbeat_interval` until the loop ends: a pass that waits
        on the chain or a slow spec fetch must not make a live provider look dead (the marketplace replaces
        the uncommitted replicas of a provider silent for its heartbeat TTL)."""
        while not self._finished.is_set():
            try:
                self._beat()
            except Exception:  # a bug or host problem: the next beat tries again
                log.exception("heartbeat failed")
            self._finished.wait(self.options.heartbeat_interval)

    def _beat(self) -> None:
        free_cpus, free_memory = self._free()
        with self._lock:
            running = sorted(self._running)
        self._heartbeat_hook({"provider": self.ops.address, "running": running, "free_cores": free_cpus,
                              "free_memory_mb": free_memory, "free_gpus": len(self._gpus.free()),
                              "stopping": self.stopping})

    def _check_stake(self) -> None:
        """Say when the stake falls under the minimum (an unstake, a slash) and when it is back: under it, no
        marketplace assigns work, and a daemon that said nothing would look idle for no reason."""
        try:
            stake, minimum = self.ops.stake()
        except HashgridError as exc:
            log.debug("stake check skipped: %s", exc.message)
            return
        eligible = stake >= minimum
        if eligible != self._eligible:
            if eligible:
                log.info("provider %s: stake %s is at or above the minimum %s again: eligible for work",
                         self.ops.address, grid(stake), grid(minimum))
            else:
                log.warning("provider %s: stake %s is below the minimum %s: NOT ELIGIBLE, no new "
                            "work is assigned until it stakes more (`hashgrid provider stake AMOUNT`)",
                            self.ops.address, grid(stake), grid(minimum))
        self._eligible = eligible


def grid(wei: int) -> str:
    """wei as GRID for log lines: 12.5 GRID (six decimals at most)."""
    return f"{wei / 10**18:,.6f}".rstrip("0").rstrip(".") + " GRID"


def journal_path(state_dir: Path) -> Path:
    return Path(state_dir) / JOURNAL_FILE


def build_daemon(*, config: ProviderConfig, contracts: Any, private_key: str, options: DaemonOptions,
                 device: dict[str, Any] | None = None, marketplace_url: str | None = None) -> Daemon:
    """Wire a daemon to its feed: the marketplace's long-poll (and report everything to it) when
    `marketplace_url` is given, else the chain-event feed (chain-only mode)."""
    from provider.feed import ChainAssignmentFeed

    ops = ChainOps(contracts, private_key)
    journal = Journal(journal_path(options.state_dir))
    if marketplace_url:
        from provider.feed import MarketplaceAssignmentFeed
        from provider.marketplace_client import MarketplaceClient, MarketplaceReporter
        from provider.outbox import Outbox

        store = ContentStore(options.content_dir)
        client = MarketplaceClient(marketplace_url, private_key, chain_id=int(contracts.client.chain_id))
        market_feed = MarketplaceAssignmentFeed(client, store)
        daemon = Daemon(config=config, ops=ops, feed=market_feed, journal=journal, store=store,
                        options=options, private_key=private_key, device=device,
                        reporter=MarketplaceReporter(client, store, Outbox(journal)))
        market_feed.on_new = daemon._wake.set
        return daemon
    cursor_key = f"feed.chain.{ops.escrow_address.lower()}"
    feed = ChainAssignmentFeed(ops, load_cursor=lambda: journal.get_meta(cursor_key),
                               save_cursor=lambda value: journal.set_meta(cursor_key, value),
                               confirmations=options.confirmations,
                               start_block=int(getattr(contracts.deployment, "start_block", 0) or 0))
    return Daemon(config=config, ops=ops, feed=feed, journal=journal, store=ContentStore(options.content_dir),
                  options=options, private_key=private_key, device=device)
