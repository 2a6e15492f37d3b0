"""The tie-break of simultaneous dials: both sides keep the same one of two sessions."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from p2pstore.net.session_table import keeps_new

IDS = st.binary(min_size=20, max_size=20)


@given(a=IDS, b=IDS, a_first=st.booleans())
def test_both_sides_keep_the_session_dialled_by_the_smaller_id(a, b, a_first):
    """Sessions: one dialled by ``a``, one by ``b``.  Whichever each side registered first,
    both end with the one the smaller id dialled."""
    assume(a != b)

    def kept(local: bytes, peer: bytes, first_dialled_by_local: bool) -> bytes:
        first = local if first_dialled_by_local else peer
        second = peer if first_dialled_by_local else local
        replaced = keeps_new(local, peer, second == local, first == local)
        return second if replaced else first

    assert kept(a, b, a_first) == kept(b, a, not a_first) == min(a, b)
