"""Segment lists: what is packed opens again, and anything else is refused as an integrity error."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.codec.segments import MAGIC, MAX_SEGMENTS, pack_segments, unpack_segments
from p2pstore.errors import IntegrityError, LocalProtocolError

segments = st.lists(
    st.tuples(st.text(max_size=80), st.integers(0, 2**63 - 1)), min_size=1, max_size=50
)


@given(segments)
def test_a_packed_list_opens_to_itself(listed: list[tuple[str, int]]) -> None:
    assert unpack_segments(pack_segments(listed)) == listed


@given(st.binary(max_size=200))
def test_garbage_is_an_integrity_error_never_a_crash(data: bytes) -> None:
    for candidate in (data, MAGIC + data):
        with contextlib.suppress(IntegrityError):
            unpack_segments(candidate)


def test_bounds_are_checked_both_ways() -> None:
    with pytest.raises(LocalProtocolError):
        pack_segments([])
    with pytest.raises(LocalProtocolError):
        pack_segments([("c", 1)] * (MAX_SEGMENTS + 1))
    with pytest.raises(LocalProtocolError):
        pack_segments([("c", -1)])
    too_many = MAGIC + b"\xdd" + (MAX_SEGMENTS + 1).to_bytes(4, "big")
    with pytest.raises(IntegrityError):
        unpack_segments(too_many)
