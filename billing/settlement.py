"""Settle tasks on chain exactly once: billing's payments become finalize reports, sent in finalizeMany
batches, with the task id as idempotency key in the settlement journal (billing/journal.py).

Why it never pays twice: the escrow finalizes a task only in state Assigned, so any second finalize reverts;
the Settler also reads the chain before every send and never sends for a task the chain already closed.
Why it never skips one: a task leaves the journal's open states only when the chain shows it closed
(confirmed) or a revert that retrying cannot fix was recorded (failed, with the decoded error name);
RPC errors keep it open and are retried with back-off, now or on the next `settle` / `resume`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import requests
from eth_account.signers.local import LocalAccount
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import TxReceipt

from billing.journal import BillingSettlement, SettlementJournal, SettlementState
from hashgrid.chain.client import Signer
from hashgrid.chain.contracts import ChainEvent, Escrow, ReplicaReport, TaskState
from hashgrid.errors import ChainError, ContractRevert, HashgridError

log = logging.getLogger(__name__)

# TEST FAULT INJECTION ONLY: with HASHGRID_TEST_FAULT=settle-exit-after-broadcast the process exits right
# after a finalize is broadcast, before its receipt is seen (a kill at the worst moment, for the crash tests)
FAULT_ENV = "HASHGRID_TEST_FAULT"
EXIT_AFTER_BROADCAST = "settle-exit-after-broadcast"

CLOSED_STATES = {TaskState.SETTLED: "settled", TaskState.FAILED: "failed", TaskState.EXPIRED: "expired",
                 TaskState.CANCELLED: "cancelled"}
CLOSING_EVENTS = {"TaskSettled": "settled", "TaskFailed": "failed", "TaskExpired": "expired",
                  "TaskCancelled": "cancelled"}
_CONNECTION_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)
T = TypeVar("T")


class PaymentPlan(Protocol):
    """What the Settler needs per task: a `billing.usage.UsageSettlement` or a `SettlementRequest`."""

    @property
    def task_id(self) -> int: ...

    @property
    def payments(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class SettlementRequest:
    task_id: int
    payments: Mapping[str, int]  # provider (any case) -> wei; providers left out are paid 0


@dataclass(frozen=True)
class SettlementOutcome:
    """Where one task stands after a `settle` call."""

    task_id: int
    state: SettlementState
    sent_tx: str | None = None  # the transaction this call sent that closed it (None: nothing sent)
    chain_state: str | None = None  # settled, failed, expired, cancelled (once confirmed)
    error_code: str | None = None
    error_name: str | None = None  # decoded Solidity error of a revert
    error: str | None = None
    retryable: bool = False

    @property
    def done(self) -> bool:
        return self.state == SettlementState.CONFIRMED


class Settler:
    """Sends finalizeMany batches for planned tasks, recording every step in the journal first.

    `batch_size` tasks per transaction; RPC failures (ChainError) are retried `max_attempts` times with
    exponential back-off from `backoff` seconds (capped at `max_backoff`); after that the task stays
    pending/sent with the error recorded, for the next call. `sleep` is injectable for tests of timing only.
    """

    def __init__(self, escrow: Escrow, journal: SettlementJournal, *, sender: Signer, batch_size: int = 20,
                 max_attempts: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 tx_timeout: float | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if batch_size < 1 or max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        self.escrow = escrow
        self.client = escrow.client
        self.journal = journal
        self.account: LocalAccount = self.client.account(sender)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.tx_timeout = tx_timeout
        self.sleep = sleep

    # ------------------------------------------------------------------ entry points
    def settle(self, plans: Iterable[PaymentPlan]) -> list[SettlementOutcome]:
        """Settle each planned task at most once on chain; returns each task's outcome (same order, once per
        task). A task already confirmed in the journal costs no chain call at all."""
        task_ids: list[int] = []
        for plan in plans:
            if plan.task_id in task_ids:
                continue
            task_ids.append(plan.task_id)
            self.journal.begin(plan.task_id, plan.payments)
        return self._run(task_ids)

    def resume(self) -> list[SettlementOutcome]:
        """Drive every journaled task still pending or sent (after a restart), with its journaled plan."""
        rows = self.journal.rows([SettlementState.PENDING, SettlementState.SENT])
        return self._run([row.task_id for row in rows])

    # ------------------------------------------------------------------ the loop
    def _run(self, task_ids: list[int]) -> list[SettlementOutcome]:
        open_ids = [t for t in task_ids if self._row(t).state != SettlementState.CONFIRMED]
        sent: dict[int, str] = {}
        if open_ids:
            self._drive(open_ids, sent)
        return [self._outcome(self._row(t), sent.get(t)) for t in task_ids]

    def _drive(self, task_ids: list[int], sent: dict[int, str]) -> None:
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            try:
                ready = [t for t in task_ids if self._needs_send(t)]
                for start in range(0, len(ready), self.batch_size):
                    self._send(ready[start : start + self.batch_size], sent)
                return
            except ChainError as exc:
                still_open = [t for t in task_ids if self._row(t).state in (SettlementState.PENDING,
                                                                             SettlementState.SENT)]
                self.journal.note_error(still_open, exc)
                log.warning("settlement attempt %d/%d for %d task(s) failed: %s", attempt, self.max_attempts,
                            len(still_open), exc.message)
                if attempt == self.max_attempts:
                    return
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff)

    def _row(self, task_id: int) -> BillingSettlement:
        row = self.journal.get(task_id)
        if row is None:
            raise HashgridError(f"task {task_id} has no settlement journal row", task_id=task_id)
        return row

    # ------------------------------------------------------------------ reading the chain first
    def _needs_send(self, task_id: int) -> bool:
        """Resolve a task against the chain; True if a finalize must be sent (its reports are journaled)."""
        row = self._row(task_id)
        if row.state == SettlementState.CONFIRMED:
            return False
        try:
            task = self.escrow.get_task(task_id)
        except ContractRevert as exc:
            self.journal.mark_failed(task_id, exc)
            return False
        if task.state in CLOSED_STATES:
            self._confirm_from_chain(task_id)
            return False
        if row.state == SettlementState.SENT and row.tx_hash:
            if self._await_in_flight(row.tx_hash) and self.escrow.get_task(task_id).state in CLOSED_STATES:
                self._confirm_from_chain(task_id)
                return False
            self.journal.mark_unsent([task_id])
        if row.reports is None:
            reports = self.escrow.build_reports(task_id, row.planned_payments())
            self._warn_plan_differences(task_id, row.planned_payments(), reports)
            self.journal.set_reports(task_id, reports)
        return True

    def _await_in_flight(self, tx_hash: str) -> bool:
        """Wait for a transaction the journal says was signed; False if no node knows it (never broadcast,
        or dropped), so a fresh one must be sent."""
        eth = self.client.w3.eth
        try:
            _guard(lambda: eth.get_transaction_receipt(tx_hash))  # type: ignore[arg-type]
            return True
        except TransactionNotFound:
            pass
        try:
            _guard(lambda: eth.get_transaction(tx_hash))  # type: ignore[arg-type]
        except TransactionNotFound:
            return False
        self.client.wait(tx_hash, timeout=self.tx_timeout)  # TransactionTimeout is a retryable ChainError
        return True

    def _warn_plan_differences(self, task_id: int, planned: Mapping[str, int],
                               reports: Sequence[ReplicaReport]) -> None:
        """build_reports pays only replicas that agreed on chain; a plan paying anyone else is a billing bug
        worth a log line (the escrow would refuse it anyway)."""
        reported = {r.provider.lower(): r.payment for r in reports}
        for provider, amount in planned.items():
            if amount and reported.get(provider.lower(), 0) != amount:
                log.error("task %d: plan pays %s %d wei but it is no agreeing replica on chain; sending 0",
                          task_id, provider, amount)

    def _confirm_from_chain(self, task_id: int) -> None:
        """The chain closed the task (our transaction, another settler's, an expiry): record how."""
        events = self.escrow.events(names=list(CLOSING_EVENTS), first_indexed=task_id)
        closing = events[-1] if events else None
        if closing is None:
            state = CLOSED_STATES.get(self.escrow.get_task(task_id).state, "closed")
            self.journal.mark_confirmed(task_id, chain_state=state, chain_tx_hash=None, paid=0, fee=0,
                                        refund=0)
            return
        self._confirm_event(task_id, closing)

    def _confirm_event(self, task_id: int, event: ChainEvent) -> None:
        args = event.args
        self.journal.mark_confirmed(task_id, chain_state=CLOSING_EVENTS[event.name],
                                    chain_tx_hash=event.tx_hash, paid=int(args.get("paid", 0)),
                                    fee=int(args.get("fee", 0)), refund=int(args.get("refunded", 0)))

    # ------------------------------------------------------------------ sending
    def _send(self, task_ids: list[int], sent: dict[int, str]) -> None:
        """One finalize (one task) or finalizeMany (several): simulate, sign, journal, broadcast, wait. A
        revert of a batch is retried task by task, so one bad task cannot block the others."""
        rows = [self._row(t) for t in task_ids]
        if len(rows) == 1:
            fn = self.escrow.fn("finalize", rows[0].task_id, [r.as_tuple() for r in rows[0].report_objects()])
        else:
            fn = self.escrow.fn("finalizeMany", task_ids, [[r.as_tuple() for r in row.report_objects()]
                                                          for row in rows])
        try:
            self.client.call(fn, sender=self.account.address)
            gas = int(_guard(lambda: fn.estimate_gas({"from": self.account.address})))
        except ContractRevert as exc:
            self._on_revert(task_ids, exc, sent)
            return
        except ContractLogicError:  # the state changed between the call and the estimate: call again
            self._on_revert(task_ids, self._decoded(fn, "latest"), sent)
            return
        tx_hash = self._broadcast(fn, task_ids, gas + gas // 5 + 10_000)
        receipt = self.client.wait(tx_hash, timeout=self.tx_timeout)
        if receipt["status"] != 1:
            self._on_revert(task_ids, self._decoded(fn, int(receipt["blockNumber"]) - 1), sent)
            return
        self._confirm_receipt(task_ids, receipt, tx_hash, sent)

    def _broadcast(self, fn: Any, task_ids: Sequence[int], gas: int) -> str:
        """Sign, journal the hash (before any node can see the transaction), then send it."""
        address = self.account.address
        with self.client.nonces.reserve(address) as nonce:
            tx = fn.build_transaction({"from": address, "chainId": self.client.chain_id, "nonce": nonce,
                                       "gas": gas, "value": 0, **self.client.fees()})
            signed = self.account.sign_transaction(tx)
            tx_hash = "0x" + bytes(signed.hash).hex()
            self.journal.mark_sent(task_ids, tx_hash, nonce)
            try:
                _guard(lambda: self.client.w3.eth.send_raw_transaction(signed.raw_transaction))
            except Web3RPCError as exc:
                if "already known" not in str(exc):
                    raise ChainError(f"finalize send failed: {exc}", tx_hash=tx_hash) from exc
            if os.environ.get(FAULT_ENV) == EXIT_AFTER_BROADCAST:
                log.warning("TEST FAULT INJECTION (%s): exiting with %s in flight", FAULT_ENV, tx_hash)
                os._exit(137)
        log.info("settlement tx %s sent for task(s) %s (nonce %d)", tx_hash, list(task_ids), nonce)
        return tx_hash

    def _decoded(self, fn: Any, block: int | str) -> ContractRevert:
        """Why `fn` reverts at `block`, as the contract's named error."""
        try:
            self.client.call(fn, sender=self.account.address, block=block)
        except ContractRevert as exc:
            return exc
        return ContractRevert("finalize failed on chain without a revert reason (out of gas?)", error_name="")

    def _on_revert(self, task_ids: list[int], exc: ContractRevert, sent: dict[int, str]) -> None:
        if len(task_ids) > 1:
            log.warning("finalizeMany of %d tasks reverts (%s); retrying task by task", len(task_ids),
                        exc.error_name or exc.message)
            for task_id in task_ids:
                if self._needs_send(task_id):
                    self._send([task_id], sent)
            return
        task_id = task_ids[0]
        if self.escrow.get_task(task_id).state in CLOSED_STATES:  # closed by someone else meanwhile
            self._confirm_from_chain(task_id)
            return
        log.error("task %d: finalize reverts with %s: %s", task_id, exc.error_name or "?", exc.message)
        self.journal.mark_failed(task_id, exc)

    def _confirm_receipt(self, task_ids: list[int], receipt: TxReceipt, tx_hash: str,
                         sent: dict[int, str]) -> None:
        closing = {int(e.args["taskId"]): e for e in self.escrow.receipt_events(receipt)
                   if e.name in CLOSING_EVENTS}
        for task_id in task_ids:
            event = closing.get(task_id)
            if event is None:  # cannot happen with a successful finalize; read the chain rather than guess
                self._confirm_from_chain(task_id)
                continue
            self._confirm_event(task_id, event)
            sent[task_id] = tx_hash

    # ------------------------------------------------------------------ results
    @staticmethod
    def _outcome(row: BillingSettlement, sent_tx: str | None) -> SettlementOutcome:
        return SettlementOutcome(row.task_id, row.state, sent_tx, row.chain_state, row.error_code,
                                 row.error_name, row.error, row.retryable)


def _guard(fn: Callable[[], T]) -> T:
    """Connection-level failures become ChainError (retryable), like hashgrid.chain.client does."""
    try:
        return fn()
    except _CONNECTION_ERRORS as exc:
        raise ChainError(f"RPC unreachable: {type(exc).__name__}") from exc
