"""Billing fixtures: a settlement journal on its own SQLite file (chain helpers: chainplay.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import create_engine

from billing.journal import SettlementJournal


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SettlementJournal]:
    engine = create_engine(f"sqlite:///{tmp_path / 'billing.db'}")
    journal = SettlementJournal(engine)
    journal.create_table()
    yield journal
    engine.dispose()
