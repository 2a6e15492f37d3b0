"""What a steward may conclude about a reference from the evidence it gathered.

Strategy: absence of evidence never frees data.  A steward renews an object's leases unless
every reference it knows to the object is shown *dead* by the tenant's own signed words:

* a lease reference is dead once its signed expiry has passed;
* a bucket reference is dead when the union of what the bucket's replicas showed holds the
  version's PUT and an effective ERASE of it (``core.references.judge``: none while a
  retention date or legal hold stands), or a MARKER in its place (a reference to no data);
* a bucket reference whose PUT no replica shows is dead only if most of the replicas asked
  answered and the reference was signed more than ``settle`` ago (a client signs the
  reference, publishes it, then pushes the PUT; anti-entropy spreads the PUT to every replica
  within minutes): a put that died between the two leaves garbage, which goes.  With fewer
  answers it is *unknown*, and an unknown reference keeps the object like a live one.

Retention is sticky: a steward remembers the latest retention it verified for a reference
(``known``) and never calls a reference dead while that retention holds, whatever the replicas
show later (a replica hiding a RETAIN entry gains nothing against a steward that saw it once,
nor against a holder that was shown it: holders keep retention too).  Pure.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence
from typing import Final

from p2pstore.core.bucket_entries import Op, VerifiedEntry
from p2pstore.core.bucket_index import BucketIndex
from p2pstore.core.leases import DAY, Retention
from p2pstore.core.references import Liveness, is_bucket_reference, judge
from p2pstore.wire.buckets import BucketEntry
from p2pstore.wire.leases import Reference

SETTLE: Final = DAY
"""Seconds after its signing within which a referenced version's PUT must be visible."""


class Verdict(enum.Enum):
    LIVE = "live"
    DEAD = "dead"
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True, slots=True)
class Shown:
    """What a steward gathered about one bucket version: the verified entries (the union over
    the replicas that answered), and how many replicas answered out of how many it asked."""

    entries: tuple[VerifiedEntry, ...]
    answered: int
    asked: int


@dataclasses.dataclass(frozen=True, slots=True)
class Assessment:
    """One reference's verdict, the retention shown for it (joined with what was known), and
    the tenant's entries proving that retention to holders."""

    verdict: Verdict
    retention: Retention
    proof_entries: tuple[BucketEntry, ...]
    why: str


def assess(
    reference: Reference,
    shown: Shown | None,
    now: float,
    *,
    known: Retention | None = None,
    settle: float = SETTLE,
) -> Assessment:
    """The verdict on a *verified* ``reference`` at ``now`` (see the module docstring).

    ``shown``: what the bucket's replicas showed (None: not asked, or unreachable);
    ``known``: the latest retention this steward verified for the reference before."""
    known = known or Retention()
    if not is_bucket_reference(reference):
        live = now * 1000 < reference.expires_ms
        why = "lease reference " + ("valid" if live else "expired")
        return Assessment(Verdict.LIVE if live else Verdict.DEAD, known, (), why)
    if shown is None or shown.answered == 0:
        return _unless_retained(
            Verdict.UNKNOWN, known, (), "no replica of its bucket answered", now
        )
    matching = [e for e in shown.entries if _about(reference, e)]
    retention, proofs = _retention(reference, matching)
    retention = retention.extended(known)
    liveness = judge(reference, matching, now)
    if liveness.live:
        verdict, why = Verdict.LIVE, liveness.why
    elif any(e.op in (Op.PUT, Op.MARKER) for e in matching):
        verdict, why = Verdict.DEAD, liveness.why
    elif now * 1000 >= reference.issued_ms + settle * 1000 and 2 * shown.answered > shown.asked:
        verdict = Verdict.DEAD
        why = f"no PUT of the version from {shown.answered} of {shown.asked} replicas"
    else:
        verdict = Verdict.UNKNOWN
        why = f"no PUT shown yet ({shown.answered} of {shown.asked} replicas answered)"
    return _unless_retained(verdict, retention, proofs, why, now)


def combine(assessments: Iterable[Assessment]) -> Liveness | None:
    """The object's liveness from its references' assessments (None: no reference known):
    live if any reference is live or unknown; retention joined over all of them."""
    found = list(assessments)
    if not found:
        return None
    retention = Retention()
    for one in found:
        retention = retention.extended(one.retention)
    keeping = [a for a in found if a.verdict is not Verdict.DEAD]
    if keeping:
        return Liveness(True, retention, keeping[0].why)
    return Liveness(False, retention, found[0].why)


def _unless_retained(
    verdict: Verdict,
    retention: Retention,
    proofs: tuple[BucketEntry, ...],
    why: str,
    now: float,
) -> Assessment:
    if verdict is Verdict.DEAD and retention.holds(now):
        return Assessment(Verdict.LIVE, retention, proofs, f"retained ({why})")
    return Assessment(verdict, retention, proofs, why)


def _about(reference: Reference, entry: VerifiedEntry) -> bool:
    e = entry.entry
    return (e.tenant, e.bucket_token, e.name, e.version) == (
        reference.tenant,
        reference.bucket_token,
        reference.name,
        reference.version,
    )


def _retention(
    reference: Reference, matching: Sequence[VerifiedEntry]
) -> tuple[Retention, tuple[BucketEntry, ...]]:
    """The retention the version's kept entries set, and those entries (PUT or RETAIN)."""
    if not matching:
        return Retention(), ()
    index = BucketIndex(matching[0].bucket)
    for entry in matching:
        index.add(entry)
    retention = Retention()
    proofs: list[BucketEntry] = []
    for kept in index.entries_of(reference.name, reference.version):
        e = kept.entry
        if kept.op in (Op.PUT, Op.RETAIN) and (e.retain_until or e.legal_hold):
            retention = retention.extended(Retention(e.retain_until, e.legal_hold))
            proofs.append(e)
    return retention, tuple(proofs)
