"""canonical_json's json.dumps fast path must write exactly what the rfc8785 package writes, and refuse
exactly what it refuses: a spec hash computed either way is the same on chain."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from hashgrid.canonical import canonical_json
from hashgrid.errors import InvalidInput

_LIMIT = 2**53
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-_LIMIT - 2, max_value=_LIMIT + 2)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1.0, 2.0**53, 2.0**53 - 1, 1e21, 1e-7, 0.1, 256.0])
    | st.text()
    | st.sampled_from(["\x00", "\x1f", "\x7f", "\u2028", '"\\', "\ud800", "é", "\U0001f600", "\ue000"])
)
keys = st.text() | st.sampled_from(["a", "B", "é", "\U0001f600", "\ue000", "\ud800", ""])
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def reference(document: Any) -> bytes | None:
    try:
        return rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):  # refused: canonical_json raises
        return None


@settings(max_examples=3000, deadline=None)
@given(documents)
def test_fast_path_matches_rfc8785(document: Any) -> None:
    expected = reference(document)
    if expected is None:
        with pytest.raises(InvalidInput):
            canonical_json(document)
    else:
        assert canonical_json(document) == expected


def test_integral_floats_and_large_integers() -> None:
    assert canonical_json({"b": 1.0, "a": -0.0}) == b'{"a":0,"b":1}'
    assert canonical_json([1e21, 0.5]) == rfc8785.dumps([1e21, 0.5])
    with pytest.raises(InvalidInput):
        canonical_json({"wei": 2**53})
