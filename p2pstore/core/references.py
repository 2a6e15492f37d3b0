"""References: a tenant's signed word that an object is still wanted, and when it stops being.

Strategy: an object lives while a valid signed reference to it exists (DESIGN, "Trust"); its
stewards renew its fragments' leases only while they have verified one.  Bucket entries seal
the read cap (the replicas must not learn names), so the object an entry points to is not
visible in it; the tenant's machine that writes a version therefore also signs a
:class:`~p2pstore.wire.leases.Reference` binding the object id to that version, in the clear
for the object's stewards.  Two kinds:

* a *bucket* reference names ``(bucket_token, name, version)``: it is live while that version's
  PUT exists in the bucket index and the version is not erased -- no effective ERASE, or one
  held back by retention or a legal hold (``core.bucket_index``).  A MARKER does not end it
  (versioning keeps older versions); an ERASE does, once retention allows;
* a *lease* reference (``p2pstore put`` without a bucket) carries ``expires_ms``: live until
  then; its signer renews it by signing a new one (``p2pstore keep``).

Both are signed by a client certificate the mesh CA issued, checked at the reference's own time
(like bucket entries, references must outlive the machine's certificate) and against the
current revocation list.  A reference names no holders and grants no space by itself: what it
costs is the leases stewards grant for it, bounded per steward at each holder.

Retention travels to holders as a :class:`~p2pstore.wire.leases.RetentionProof` (the bucket
reference and the tenant's PUT or RETAIN entry of that version): :func:`retention_shown` checks
both signatures and that they speak of the same version, so no steward can invent or shorten
a date.  Pure: time and the trust anchor come in as arguments.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

import msgpack

from p2pstore.core.bucket_entries import Op, VerifiedEntry, verify_entry
from p2pstore.core.bucket_index import BucketIndex
from p2pstore.core.leases import Retention
from p2pstore.errors import EntryRejected, IntegrityError, LocalProtocolError, PeerRefused
from p2pstore.identity import (
    CLOCK_SKEW,
    NodeCredentials,
    PeerIdentity,
    Role,
    TrustAnchor,
    verify_signature,
)
from p2pstore.wire.buckets import TOKEN_LENGTH, VERSION_LENGTH
from p2pstore.wire.leases import Reference, RetentionProof
from p2pstore.wire.schema import schema_of

REFERENCE_DOMAIN: Final = b"p2pstore-reference-v1\0"
MAX_SKEW_MS: Final = int(CLOCK_SKEW.total_seconds() * 1000)


class ReferenceRejected(IntegrityError):
    """A reference that does not check: malformed, badly signed, or not the CA's client."""


def is_bucket_reference(reference: Reference) -> bool:
    return bool(reference.bucket_token)


def signed_bytes(reference: Reference) -> bytes:
    """What the signature covers: every field but the signature."""
    values = schema_of(Reference).values(reference)[:-1]
    packed: bytes = msgpack.packb(values, use_bin_type=True)
    return REFERENCE_DOMAIN + packed


def shape_problem(reference: Reference) -> str | None:
    """Why the reference's fields do not fit its kind (None if they do)."""
    if is_bucket_reference(reference):
        if (len(reference.bucket_token), len(reference.name), len(reference.version)) != (
            TOKEN_LENGTH,
            TOKEN_LENGTH,
            VERSION_LENGTH,
        ):
            return "a bucket reference names a bucket token, a name token and a version"
        if reference.expires_ms or not reference.tenant:
            return "a bucket reference has a tenant and no expiry"
        return None
    if reference.name or reference.version:
        return "a lease reference names no bucket version"
    if reference.expires_ms <= reference.issued_ms:
        return "a lease reference expires after it is issued"
    return None


def sign_reference(
    signer: NodeCredentials,
    object_id: bytes,
    *,
    now: float,
    expires: float | None = None,
    bucket_token: bytes = b"",
    name: bytes = b"",
    version: bytes = b"",
) -> Reference:
    """Sign a reference to ``object_id``: a lease until ``expires`` (Unix seconds), or a bucket
    version's.  Raises :class:`LocalProtocolError` if the fields do not fit either kind."""
    issued = math.floor(now * 1000)
    unsigned = Reference(
        object_id=object_id,
        tenant=signer.identity.tenant or "",
        bucket_token=bucket_token,
        name=name,
        version=version,
        issued_ms=issued,
        expires_ms=0 if expires is None else math.floor(expires * 1000),
        signer_key=signer.public_key_bytes(),
        certificate=signer.certificate_der(),
        signature=bytes(64),
    )
    problem = shape_problem(unsigned)
    if problem is not None:
        raise LocalProtocolError(f"refusing to sign a reference: {problem}")
    return dataclasses.replace(unsigned, signature=signer.sign(signed_bytes(unsigned)))


def verify_reference(reference: Reference, now: float, *, trust: TrustAnchor) -> PeerIdentity:
    """Check the reference's shape, date, signature and certificate (a client's, of its
    tenant, valid at its issue time, unrevoked); return the signer's identity.

    Raises :class:`ReferenceRejected` naming the first problem."""
    what = f"reference to object {reference.object_id.hex()[:16]}"
    problem = shape_problem(reference)
    if problem is not None:
        raise ReferenceRejected(f"{what}: {problem}")
    if reference.issued_ms > now * 1000 + MAX_SKEW_MS:
        raise ReferenceRejected(f"{what} is dated in the future: check the signer's clock")
    try:
        signer = verify_signature(
            reference.signer_key, signed_bytes(reference), reference.signature
        )
    except IntegrityError as error:
        raise ReferenceRejected(f"{what}: {error}") from None
    at = datetime.fromtimestamp(reference.issued_ms / 1000, UTC)
    try:
        identity = trust.verify_der(reference.certificate, at)
    except PeerRefused as error:
        raise ReferenceRejected(f"{what}: the mesh CA refuses its certificate: {error}") from None
    if identity.node_id != signer:
        raise ReferenceRejected(f"{what} carries another identity's certificate")
    if identity.role is not Role.CLIENT:
        raise ReferenceRejected(f"{what} is signed by {identity.describe()}, not a client")
    if (identity.tenant or "") != reference.tenant:
        raise ReferenceRejected(f"{what} is signed by {identity.describe()}, not its tenant")
    return identity


def _matches(reference: Reference, entry: VerifiedEntry) -> bool:
    e = entry.entry
    return (e.tenant, e.bucket_token, e.name, e.version) == (
        reference.tenant,
        reference.bucket_token,
        reference.name,
        reference.version,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Liveness:
    """What a steward concluded about one verified reference at ``now``."""

    live: bool
    retention: Retention
    why: str


def judge(reference: Reference, entries: Iterable[VerifiedEntry], now: float) -> Liveness:
    """Whether a verified ``reference`` is live at ``now`` given the verified bucket entries a
    steward gathered about its version (the union of what several replicas showed: a replica
    can hide an entry only if another shows it).  A bucket reference whose PUT was seen by
    nobody is not live: the version was never written, or every replica hides it."""
    if not is_bucket_reference(reference):
        live = now * 1000 < reference.expires_ms
        return Liveness(live, Retention(), "lease reference " + ("valid" if live else "expired"))
    index: BucketIndex | None = None
    for entry in entries:
        if _matches(reference, entry):
            if index is None:
                index = BucketIndex(entry.bucket)
            index.add(entry)
    view = None
    if index is not None:
        view = next(
            (
                v
                for v in index.versions(reference.name, -math.inf)
                if v.version == reference.version
            ),
            None,
        )
    if view is None or view.op is not Op.PUT:
        return Liveness(False, Retention(), "no PUT of the referenced version was shown")
    retention = Retention(view.retain_until, view.legal_hold)
    if view.erase_requested and not view.protected(now):
        return Liveness(False, retention, "the version was erased")
    why = "retained" if view.erase_requested else "the version is live"
    return Liveness(True, retention, why)


def retention_shown(
    proof: RetentionProof, now: float, *, trust: TrustAnchor
) -> tuple[bytes, Retention]:
    """The object and retention a proof establishes, both words checked as the tenant's.

    Raises :class:`ReferenceRejected` if the reference or entry does not check, or they speak
    of different versions."""
    reference = proof.reference
    verify_reference(reference, now, trust=trust)
    if not is_bucket_reference(reference):
        raise ReferenceRejected("a retention proof carries a bucket reference")
    try:
        entry = verify_entry(proof.entry, now, trust=trust)
    except EntryRejected as error:
        raise ReferenceRejected(f"a retention proof's entry does not check: {error}") from None
    if not _matches(reference, entry) or entry.op not in (Op.PUT, Op.RETAIN):
        raise ReferenceRejected("a retention proof's entry is not about the referenced version")
    return reference.object_id, Retention(entry.entry.retain_until, entry.entry.legal_hold)
