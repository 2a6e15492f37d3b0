"""Signed bucket index entries: what each op may carry, who may sign it, when one is refused.

Strategy: a bucket belongs to a tenant, and only the tenant's client identities -- mesh
certificates naming that tenant (:mod:`p2pstore.identity.certificates`) -- may sign its entries.
The bucket's id is ``sha256(domain, tenant, bucket token)[:20]``: a DHT key that names its
tenant, so no other tenant can write into it, while the token (a keyed hash of the bucket's
name) hides the name from the replicas.  Every rule is a pure function of the entry, ``now``
and the mesh CA, so any replica or reader checks any entry whoever relayed it.

Five ops, each about one ``(name, version)``:

* PUT writes a version (``payload``: the sealed name, read cap, size and metadata);
* MARKER writes a delete marker (a version that says "deleted from here on");
* ERASE asks for one version to go for good; it takes effect only once the version's
  retention has passed and no legal hold is on it (:mod:`p2pstore.core.bucket_index`);
* RETAIN extends a version's retention date or sets a legal hold;
* RELEASE lifts a legal hold (S3's legal hold OFF); it never touches the retention date.

A written version's id is the hash of what it says (bucket, name, op, timestamp, payload):
versions are self-certifying, so even a stolen tenant key cannot overwrite an old version's
content -- it can only add newer versions, and ask for erasures that retention refuses.

The certificate is checked at the entry's own time (entries must outlive the certificates
that signed them: retention runs for years) and against the current revocation list: revoking
a stolen key makes every replica drop what it signed.  The cost, said plainly: whoever holds
the key of an expired but unrevoked certificate can still sign back-dated entries, so a
tenant revokes a machine's certificate when it retires the machine.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from datetime import UTC, datetime
from typing import Final

import msgpack

from p2pstore.errors import (
    EntryRejected,
    IdentityError,
    IntegrityError,
    LocalProtocolError,
    PeerRefused,
)
from p2pstore.identity import (
    CLOCK_SKEW,
    NODE_ID_BYTES,
    NodeCredentials,
    NodeId,
    PeerIdentity,
    TrustAnchor,
    validate_tenant,
    verify_signature,
)
from p2pstore.wire.buckets import (
    MAX_ENTRY_PAYLOAD,
    MAX_TIMESTAMP,
    TOKEN_LENGTH,
    VERSION_LENGTH,
    BucketEntry,
    encode_entry,
)

ENTRY_DOMAIN: Final = b"p2pstore-bucket-entry-v1\0"
BUCKET_DOMAIN: Final = b"p2pstore-bucket-id-v1\0"
VERSION_DOMAIN: Final = b"p2pstore-version-v1\0"
MAX_SKEW_MS: Final = int(CLOCK_SKEW.total_seconds() * 1000)
"""How far ahead of ``now`` an entry's timestamp may be (the signer's clock may be ahead)."""


class Op(enum.IntEnum):
    """What an entry does to its ``(name, version)``; the wire carries the number."""

    PUT = 1
    MARKER = 2
    ERASE = 3
    RETAIN = 4
    RELEASE = 5


class EntryReason(enum.StrEnum):
    """Why an entry was refused; the string goes into ``BucketPushReply.refused``."""

    MALFORMED = "malformed"
    """An unknown op, or fields the op does not allow."""
    BAD_VERSION = "bad-version"
    """A written version whose id is not the hash of what it says."""
    BAD_SIGNATURE = "bad-signature"
    UNCERTIFIED = "uncertified"
    """The certificate is not the mesh CA's, not valid at the entry's time, or not the signer's."""
    REVOKED = "revoked"
    WRONG_TENANT = "wrong-tenant"
    """The signer's certificate does not act for the entry's tenant."""
    FUTURE = "from-the-future"
    WRONG_BUCKET = "wrong-bucket"
    """Pushed under another bucket id than its own."""
    FULL = "full"
    OVER_QUOTA = "over-quota"


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedEntry:
    """An entry and what checking it established: its digest (sha256 of its canonical bytes),
    its bucket id and its signer (node id and certificate)."""

    entry: BucketEntry
    digest: bytes
    bucket: NodeId
    signer: NodeId
    certificate: PeerIdentity | None
    """None only for entries built by tests of the merge, which never checks signatures."""

    @property
    def op(self) -> Op:
        return Op(self.entry.op)

    @property
    def size(self) -> int:
        """Bytes a replica is charged for holding the entry."""
        return len(self.entry.payload) + len(self.entry.certificate) + 256


def bucket_id(tenant: str, bucket_token: bytes) -> NodeId:
    """The DHT key of a bucket: its index lives on the peers closest to it."""
    data = BUCKET_DOMAIN + tenant.encode() + b"\0" + bucket_token
    return NodeId(hashlib.sha256(data).digest()[:NODE_ID_BYTES])


def version_id(entry: BucketEntry) -> bytes:
    """The id a written version must have: the hash of everything it says (its tenant,
    bucket, name, op, timestamp and payload)."""
    payload = hashlib.sha256(entry.payload).digest()
    fields = [entry.tenant, entry.bucket_token, entry.name, entry.op, entry.timestamp, payload]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return hashlib.sha256(VERSION_DOMAIN + packed).digest()[:VERSION_LENGTH]


def entry_digest(entry: BucketEntry) -> bytes:
    """sha256 of the entry's canonical bytes: how replicas order, page and compare entries."""
    return hashlib.sha256(encode_entry(entry)).digest()


def signed_bytes(entry: BucketEntry) -> bytes:
    """What an entry's signature covers: every field but the signature (payload and
    certificate as their sha256)."""
    fields = [
        entry.tenant,
        entry.bucket_token,
        entry.name,
        entry.version,
        entry.op,
        entry.timestamp,
        entry.retain_until,
        entry.legal_hold,
        hashlib.sha256(entry.payload).digest(),
        entry.signer_key,
        hashlib.sha256(entry.certificate).digest(),
    ]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return ENTRY_DOMAIN + packed


def sign_entry(
    signer: NodeCredentials,
    *,
    bucket_token: bytes,
    name: bytes,
    op: Op,
    timestamp: int,
    payload: bytes = b"",
    version: bytes | None = None,
    retain_until: int = 0,
    legal_hold: bool = False,
) -> BucketEntry:
    """Sign an entry for the tenant ``signer``'s certificate acts for.

    ``version`` is computed for PUT and MARKER, and required for the other ops.  Raises
    :class:`LocalProtocolError` if the signer acts for no tenant or the entry breaks a rule
    that does not depend on time.
    """
    tenant = signer.identity.tenant
    if tenant is None:
        raise LocalProtocolError(
            f"{signer.identity.describe()} acts for no tenant: ask the mesh CA for a client "
            f"certificate issued with --tenant"
        )
    written = op in (Op.PUT, Op.MARKER)
    if written and not (isinstance(payload, bytes) and len(payload) <= MAX_ENTRY_PAYLOAD):
        raise LocalProtocolError(f"an entry's payload is at most {MAX_ENTRY_PAYLOAD} bytes")
    if not written and version is None:
        raise LocalProtocolError(f"a {op.name} entry names the version it is about")
    unsigned = BucketEntry(
        tenant=tenant,
        bucket_token=bucket_token,
        name=name,
        version=bytes(VERSION_LENGTH) if version is None else version,
        op=int(op),
        timestamp=timestamp,
        retain_until=retain_until,
        legal_hold=legal_hold,
        payload=payload,
        signer_key=signer.public_key_bytes(),
        certificate=signer.certificate_der(),
        signature=bytes(64),
    )
    if written:
        unsigned = dataclasses.replace(unsigned, version=version_id(unsigned))
    problem = shape_problem(unsigned)
    if problem is not None:
        raise LocalProtocolError(f"refusing to sign: {problem}")
    return dataclasses.replace(unsigned, signature=signer.sign(signed_bytes(unsigned)))


def shape_problem(entry: BucketEntry) -> str | None:
    """Why the entry's fields do not fit its op (None when they do); no crypto, no time."""
    try:
        op = Op(entry.op)
    except ValueError:
        return f"unknown op {entry.op}"
    try:
        validate_tenant(entry.tenant)
    except IdentityError as error:
        return str(error)
    problems = {
        f"bucket and name tokens are {TOKEN_LENGTH} bytes": (
            len(entry.bucket_token) != TOKEN_LENGTH or len(entry.name) != TOKEN_LENGTH
        ),
        "a PUT carries its sealed name and read cap": op is Op.PUT and not entry.payload,
        f"a {op.name} entry carries no payload": (
            op in (Op.ERASE, Op.RETAIN, Op.RELEASE) and bool(entry.payload)
        ),
        f"an {op.name} entry sets no retention": (
            op in (Op.ERASE, Op.RELEASE) and bool(entry.retain_until or entry.legal_hold)
        ),
        "a RETAIN entry sets a retention date or a legal hold": (
            op is Op.RETAIN and not (entry.retain_until or entry.legal_hold)
        ),
        "timestamp out of range": not 0 <= entry.timestamp <= MAX_TIMESTAMP,
    }
    return next((problem for problem, broken in problems.items() if broken), None)


def verify_entry(entry: BucketEntry, now: float, *, trust: TrustAnchor) -> VerifiedEntry:
    """Check every rule for ``entry`` at ``now`` against the mesh CA ``trust``.

    Raises :class:`EntryRejected` whose ``reason`` (an :class:`EntryReason`) names the first
    rule broken, cheap checks first.
    """
    what = f"bucket entry {entry.version.hex()[:12]} of tenant {entry.tenant!r}"
    problem = shape_problem(entry)
    if problem is not None:
        raise EntryRejected(f"{what}: {problem}", reason=EntryReason.MALFORMED)
    if Op(entry.op) in (Op.PUT, Op.MARKER) and version_id(entry) != entry.version:
        raise EntryRejected(
            f"{what}: its version id is not the hash of its content",
            reason=EntryReason.BAD_VERSION,
        )
    if entry.timestamp > now * 1000 + MAX_SKEW_MS:
        raise EntryRejected(
            f"{what} is dated {entry.timestamp - now * 1000:.0f} ms in the future: check the "
            f"signer's clock",
            reason=EntryReason.FUTURE,
        )
    try:
        signer = verify_signature(entry.signer_key, signed_bytes(entry), entry.signature)
    except IntegrityError as error:
        raise EntryRejected(f"{what}: {error}", reason=EntryReason.BAD_SIGNATURE) from None
    certificate = _certificate(entry, signer, trust, what)
    return VerifiedEntry(
        entry, entry_digest(entry), bucket_id(entry.tenant, entry.bucket_token), signer, certificate
    )


def _certificate(entry: BucketEntry, signer: NodeId, trust: TrustAnchor, what: str) -> PeerIdentity:
    at = datetime.fromtimestamp(entry.timestamp / 1000, UTC)
    try:
        certificate = trust.verify_der(entry.certificate, at)
    except PeerRefused as error:
        reason = EntryReason.REVOKED if error.reason == "revoked" else EntryReason.UNCERTIFIED
        raise EntryRejected(
            f"{what}: the mesh CA refuses its certificate at the entry's time ({error.reason}): "
            f"{error}",
            reason=reason,
        ) from None
    if certificate.node_id != signer:
        raise EntryRejected(
            f"{what} carries the certificate of {certificate.describe()}, not its signer's",
            reason=EntryReason.UNCERTIFIED,
        )
    if certificate.tenant != entry.tenant:
        acts_for = "no tenant" if certificate.tenant is None else f"tenant {certificate.tenant!r}"
        raise EntryRejected(
            f"{what} is signed by {certificate.describe()}, which acts for {acts_for}",
            reason=EntryReason.WRONG_TENANT,
        )
    return certificate
