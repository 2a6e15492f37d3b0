"""What a steward concludes from what replicas show: absence of evidence never kills a
reference, hidden entries never shorten retention, and a stolen key erases nothing early."""

from __future__ import annotations

import hashlib

from bucket_fixtures import ALICE, T0, signed, verified
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.bucket_entries import Op
from p2pstore.core.leases import Retention
from p2pstore.core.reference_evidence import SETTLE, Shown, Verdict, assess, combine
from p2pstore.core.references import judge, sign_reference

OBJECT = hashlib.sha256(b"the object").digest()
DAY = 86400
RETAINED = int(T0) + 30 * DAY

PUT = signed(Op.PUT, retain_until=RETAINED)
REFERENCE = sign_reference(
    ALICE, OBJECT, now=T0, bucket_token=PUT.bucket_token, name=PUT.name, version=PUT.version
)
POOL = {
    "put": verified(PUT),
    "marker": verified(signed(Op.MARKER, at=T0 + 1), T0 + 1),
    "overwrite": verified(signed(Op.PUT, at=T0 + 2, payload=b"ransom"), T0 + 2),
    "erase": verified(signed(Op.ERASE, at=T0 + 3, version=PUT.version), T0 + 3),
    "shorten": verified(signed(Op.RETAIN, at=T0 + 4, version=PUT.version, retain_until=1), T0 + 4),
    "extend": verified(
        signed(Op.RETAIN, at=T0 + 5, version=PUT.version, retain_until=RETAINED + 60 * DAY), T0 + 5
    ),
    "hold": verified(signed(Op.RETAIN, at=T0 + 6, version=PUT.version, legal_hold=True), T0 + 6),
}


def shown(*names: str, answered: int = 3, asked: int = 3) -> Shown:
    return Shown(tuple(POOL[n] for n in names), answered, asked)


def test_a_version_is_live_until_erased_after_its_retention():
    assert assess(REFERENCE, shown("put"), T0).verdict is Verdict.LIVE
    erased = shown("put", "erase", "marker", "overwrite")
    before = assess(REFERENCE, erased, RETAINED - 1)
    assert before.verdict is Verdict.LIVE and before.retention == Retention(RETAINED)
    assert before.proof_entries == (PUT,)
    assert assess(REFERENCE, erased, RETAINED).verdict is Verdict.DEAD


def test_absence_of_evidence_is_unknown_until_a_majority_says_so_after_settling():
    assert assess(REFERENCE, None, T0).verdict is Verdict.UNKNOWN
    assert assess(REFERENCE, shown(answered=0), T0 + 9 * SETTLE).verdict is Verdict.UNKNOWN
    assert assess(REFERENCE, shown(), T0 + SETTLE - 1).verdict is Verdict.UNKNOWN
    assert assess(REFERENCE, shown(answered=1), T0 + SETTLE).verdict is Verdict.UNKNOWN
    late = T0 + 40 * DAY  # past the retention the steward never saw
    assert assess(REFERENCE, shown(answered=2), late).verdict is Verdict.DEAD
    known = Retention(RETAINED + 60 * DAY)  # but a retention seen once holds
    kept = assess(REFERENCE, shown(answered=2), late, known=known)
    assert kept.verdict is Verdict.LIVE and kept.retention == known


def test_a_lease_reference_dies_at_its_expiry_and_the_object_with_its_last_reference():
    lease = sign_reference(ALICE, OBJECT, now=T0, expires=T0 + DAY)
    assert assess(lease, None, T0 + DAY - 1).verdict is Verdict.LIVE
    dead = assess(lease, None, T0 + DAY)
    assert dead.verdict is Verdict.DEAD
    assert combine([]) is None
    unknown = assess(REFERENCE, None, T0)
    both = combine([dead, unknown])
    assert both is not None and both.live
    alone = combine([dead])
    assert alone is not None and not alone.live


@settings(max_examples=300, deadline=None)
@given(
    truth=st.sets(st.sampled_from(sorted(POOL))),
    hidden=st.lists(st.sets(st.sampled_from(sorted(POOL))), min_size=1, max_size=4),
    honest=st.booleans(),
    days=st.integers(0, 200),
    seen_before=st.booleans(),
)
def test_hiding_entries_never_kills_what_the_tenants_words_keep(
    truth, hidden, honest, days, seen_before
):
    """Replicas show subsets of the entries signed (hostile ones hide any); if one honest
    replica answers, the verdict is dead only if the whole truth says so; whatever they
    hide, a retention the steward saw before, or one still standing, is never released."""
    truth = {"put", *truth}
    now = T0 + days * DAY + 7
    views = [set(h) & truth for h in hidden] + ([truth] if honest else [])
    union = set().union(*views)
    known = Retention(RETAINED) if seen_before else Retention()
    verdict = assess(
        REFERENCE, shown(*sorted(union), answered=len(views), asked=5), now, known=known
    )
    full = judge(REFERENCE, [POOL[n] for n in truth], now)
    if honest and verdict.verdict is Verdict.DEAD:
        assert not full.live
    if verdict.verdict is Verdict.DEAD:
        assert not verdict.retention.holds(now)
        assert not (seen_before and now < RETAINED)
        assert "hold" not in union
    if now < RETAINED and "put" in union:
        assert verdict.verdict is Verdict.LIVE  # 30-day compliance: no entry releases it early
