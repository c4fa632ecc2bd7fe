"""The report outbox's rules on a real journal file: order, back-off, rejection, survival across a reopen,
and the upgrade of a schema 2 journal. The marketplace's answers here come from FAKE senders, named as such:
a refusal of one task's report while another's is taken is a fault no single real marketplace shows on cue
(the real outage is tests/e2e/test_durable_reports_e2e.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from provider.journal import SCHEMA_VERSION, Journal
from provider.outbox import Outbox, OutboxSender, Report, ReportKind


class FakeRefusal(Exception):
    """FAKE marketplace answer: what MarketplaceError carries (retryable, status)."""

    def __init__(self, status: int | None, retryable: bool) -> None:
        super().__init__(f"fake {status}")
        self.status = status
        self.retryable = retryable


def test_reports_go_in_order_and_a_refused_one_blocks_nothing(tmp_path: Path) -> None:
    outbox = Outbox(Journal(tmp_path / "journal.sqlite"))
    outbox.put_logs(1, ["a", "b"])
    outbox.put(1, ReportKind.OUTPUTS, {"files": [], "result_hash": "0x00"})
    outbox.put(1, ReportKind.STATUS, {"status": "executed"})
    outbox.put(2, ReportKind.STATUS, {"status": "running"})
    sent: list[tuple[int, str]] = []

    def fake_marketplace(report: Report) -> None:  # FAKE: refuses task 1's manifest for good
        if report.kind == ReportKind.OUTPUTS:
            raise FakeRefusal(422, retryable=False)
        sent.append((report.task_id, report.kind))

    assert OutboxSender(outbox, fake_marketplace).deliver_due() == 4
    assert sent == [(1, "log"), (1, "log"), (1, "status"), (2, "status")]
    assert outbox.pending() == 0
    [rejected] = outbox.rejected(1)
    assert rejected.kind == ReportKind.OUTPUTS and "422" in (rejected.error or "")
    outbox.put_logs(1, ["c"])  # sequence numbers continue
    assert [r.body["seq"] for r in outbox.due(float("inf"))] == [2]


def test_a_busy_answer_holds_back_only_that_tasks_later_reports(tmp_path: Path) -> None:
    outbox = Outbox(Journal(tmp_path / "journal.sqlite"))
    outbox.put(1, ReportKind.USAGE, {"report": {}})
    outbox.put(1, ReportKind.STATUS, {"status": "executed"})
    outbox.put(2, ReportKind.STATUS, {"status": "running"})
    sent: list[tuple[int, str]] = []

    def fake_marketplace(report: Report) -> None:  # FAKE: a 500 for task 1's usage report
        if report.task_id == 1:
            raise FakeRefusal(500, retryable=True)
        sent.append((report.task_id, report.kind))

    assert OutboxSender(outbox, fake_marketplace).deliver_due() == 1
    assert sent == [(2, "status")]
    assert outbox.pending(1) == 2  # the status waits behind its usage report, which backs off
    assert outbox.due(0.0) == []  # not due before its back-off
    assert [r.kind for r in outbox.due(float("inf"))] == [ReportKind.USAGE, ReportKind.STATUS]


def test_nobody_answering_pauses_every_report_and_they_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    outbox = Outbox(journal)
    for task_id in (1, 2, 3):
        outbox.put(task_id, ReportKind.STATUS, {"status": "running"})
    calls: list[int] = []

    def fake_unreachable(report: Report) -> None:  # FAKE: connection refused
        calls.append(report.task_id)
        raise FakeRefusal(None, retryable=True)

    assert OutboxSender(outbox, fake_unreachable).deliver_due() == 0
    assert calls == [1]  # one probe, not one call per report
    assert outbox.due(0.0) == []
    journal.close()
    reopened = Outbox(Journal(path))
    assert [r.task_id for r in reopened.due(float("inf"))] == [1, 2, 3]


def test_a_schema_2_journal_gains_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE outbox")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    journal = Journal(path)
    assert journal.get_meta("schema_version") == str(SCHEMA_VERSION)
    Outbox(journal).put(7, ReportKind.STATUS, {"status": "running"})
    assert Outbox(journal).pending(7) == 1
