"""The quorum rule: accept the unique leading hash with >= q votes, else escalate by what it lacks or fail."""

from __future__ import annotations

import pytest

from hashgrid.errors import InvalidInput
from verifier.quorum import Verdict, decide


def test_two_of_three_accepts_and_names_the_dissenter() -> None:
    d = decide({"a": "h1", "b": "h1", "c": "h2"}, quorum=2, max_replicas=5)
    assert d.verdict is Verdict.ACCEPTED
    assert d.accepted_hash == "h1"
    assert d.agreeing == ("a", "b")
    assert d.dissenting == ("c",)
    assert d.no_shows == ()
    assert d.extra_replicas == 0


def test_no_show_is_listed_and_does_not_block_a_quorum() -> None:
    d = decide({"a": "h1", "b": None, "c": "h1"}, quorum=2, max_replicas=3)
    assert d.verdict is Verdict.ACCEPTED
    assert d.no_shows == ("b",)
    assert d.dissenting == ()


def test_all_different_escalates_by_what_the_leader_lacks() -> None:
    d = decide({"a": "h1", "b": "h2", "c": "h3"}, quorum=2, max_replicas=5)
    assert d.verdict is Verdict.ESCALATE
    assert d.extra_replicas == 1
    assert d.agreeing == d.dissenting == ()


def test_unanimity_quorum_needs_more_replicas() -> None:
    d = decide({"a": "h1", "b": "h1", "c": "h2"}, quorum=3, max_replicas=5)
    assert d.verdict is Verdict.ESCALATE
    assert d.extra_replicas == 1


def test_a_tie_is_no_quorum_even_above_q() -> None:
    d = decide({"a": "x", "b": "x", "c": "y", "d": "y"}, quorum=2, max_replicas=6)
    assert d.verdict is Verdict.ESCALATE
    assert d.accepted_hash is None
    assert d.extra_replicas == 1


def test_fails_when_no_room_or_deadline_passed() -> None:
    full = decide({"a": "h1", "b": "h2", "c": "h3"}, quorum=2, max_replicas=3)
    assert full.verdict is Verdict.FAILED
    late = decide({"a": "h1", "b": "h2"}, quorum=2, max_replicas=5, deadline_allows=False)
    assert late.verdict is Verdict.FAILED
    assert "deadline" in late.reason


def test_no_shows_do_not_use_up_room_and_are_replaced_by_escalation() -> None:
    d = decide({"a": "h1", "b": None, "c": None}, quorum=2, max_replicas=3)
    assert d.verdict is Verdict.ESCALATE
    assert d.extra_replicas == 1
    nobody = decide({"a": None, "b": None}, quorum=2, max_replicas=2)
    assert nobody.verdict is Verdict.ESCALATE
    assert nobody.extra_replicas == 2


def test_single_replica_quorum_one() -> None:
    d = decide({"a": "h"}, quorum=1, max_replicas=3)
    assert d.verdict is Verdict.ACCEPTED
    assert d.agreeing == ("a",)


def test_bad_quorum_is_rejected() -> None:
    with pytest.raises(InvalidInput):
        decide({"a": "h"}, quorum=0, max_replicas=1)
