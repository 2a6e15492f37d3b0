"""What a steward publishes for an object, and when (the node's steward and the simulator's)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.core.records import RecordKind
from p2pstore.core.steward_records import StewardRecords

KEY = b"k" * 20
M, P = RecordKind.MANIFEST, RecordKind.PLACEMENT


def test_taking_an_object_over_publishes_both_records_then_nothing_while_nothing_changes():
    records = StewardRecords(placement_refresh=86400.0)
    named = frozenset({("a", 0), ("b", 1)})
    assert records.due(KEY, named, 0.0, manifest_kept=False, placement_kept=False) == (M, P)
    records.sent(KEY, named, 0.0)
    assert KEY in records
    assert records.due(KEY, named, 600.0, manifest_kept=True, placement_kept=True) == ()
    assert records.due(KEY, named, 86400.0, manifest_kept=True, placement_kept=True) == (P,)
    records.forget(KEY)
    assert KEY not in records
    assert records.due(KEY, named, 600.0, manifest_kept=True, placement_kept=True) == (P,)


@given(
    before=st.frozensets(st.integers(0, 5)),
    after=st.frozensets(st.integers(0, 5)),
    elapsed=st.floats(0, 2e5),
    kept=st.booleans(),
)
def test_the_placement_goes_out_exactly_when_its_holders_changed_or_it_aged(
    before, after, elapsed, kept
):
    records = StewardRecords(placement_refresh=86400.0)
    records.sent(KEY, before, 0.0)
    due = records.due(KEY, after, elapsed, manifest_kept=True, placement_kept=kept)
    assert (P in due) == (before != after or elapsed >= 86400.0 or not kept)
    assert M not in due
