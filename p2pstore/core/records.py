"""Signed DHT records: what each kind may hold, when one is refused, who holds and republishes it.

Strategy: a record must be checkable by anyone who receives it, whoever relayed it, so every
rule here is a pure function of the record, ``now`` and the mesh CA.  The publisher signs a
domain-separated digest of everything but the signature (``RECORD_DOMAIN`` + msgpack of
``[kind, key, sha256(value), sequence, expires_at, publisher_key, sha256(certificate)]``:
hashing the value first keeps an 8 MiB manifest from being copied and hashed twice by Ed25519).
Every record carries its publisher's mesh certificate, and is accepted only if the mesh CA
issued it for ``publisher_key``, has not revoked it and it is valid at ``now``: a throw-away key
publishes nothing, and whatever a member publishes is charged to an identity the CA can revoke.
The certificate is covered by the signature, so a relay cannot swap in another one (an older,
revoked certificate of the same key would make every holder drop the record).  Each kind sets
a size limit, a longest lifetime and a rule tying the key to the value or the publisher:

* MANIFEST, key = object id[:20], and the value must hash to it, so nobody can store a wrong
  manifest under an object's key (self-certifying, like fragments).
* PLACEMENT, key = object id[:20]; the value is opaque here (the placement issue gives it
  meaning); ``sequence`` orders the versions one publisher writes.
* ANNOUNCEMENT, key = the publisher's own node id; only a node certificate may announce, the
  value must carry the record's certificate and name its datacenter and region (see
  ``announcements``).
* REFERENCES, key = object id[:20]; the value lists tenant-signed references to that object
  (``core.references``), each naming it: relays (the client that wrote it, then the object's
  stewards) publish the ones they verified, and readers verify each again.
* REVOCATION and POLICY (``CA_KINDS``), key derived from the CA certificate; signed by the CA
  key with the CA certificate in place of a member's, the value a CRL of that CA (or a mesh
  policy) whose number is the record's sequence.

Lifetimes: a publisher republishes at ``republish_every`` (a quarter of the longest TTL or
less, so three lost rounds are survived), re-signing with a fresh expiry each time.  Manifests
are immutable, so a long life (30 days) only costs holders memory and lets an object outlive a
month-long absence of everyone who publishes it; placements change when repair moves
fragments, and a holder that missed an update keeps serving the old version until it expires,
so they live 7 days; announcements carry free capacity and reachability, which go stale
quickly, so a dead node vanishes from the DHT within an hour.

What a holder keeps, and how much per publisher, is :mod:`p2pstore.core.record_store`; what a
publisher sends again, and when, is :mod:`p2pstore.core.published`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from p2pstore.core.announcements import (
    Announcement,
    announcement_problem,
    decode_announcement,
    verify_announcement,
)
from p2pstore.core.mesh_policy import MAX_POLICY_BYTES, decode_policy
from p2pstore.errors import (
    IdentityError,
    IntegrityError,
    LocalProtocolError,
    PeerRefused,
    RecordRejected,
    RemoteProtocolError,
)
from p2pstore.identity import (
    CLOCK_SKEW,
    NODE_ID_BYTES,
    NodeCredentials,
    NodeId,
    PeerIdentity,
    TrustAnchor,
    short_id,
    verify_signature,
)
from p2pstore.identity.revocation import MAX_CRL_BYTES, ca_publisher, parse_revocation_list
from p2pstore.wire.dht import MAX_PUBLISHER_CERTIFICATE, MAX_RECORD_VALUE, SignedRecord
from p2pstore.wire.leases import MAX_REFERENCES_VALUE, decode_references

RECORD_DOMAIN: Final = b"p2pstore-record-v2\0"
"""v2: the publisher's certificate is signed too (v1 records carried none)."""
CA_RECORD_DOMAIN: Final = b"p2pstore-ca-record\0"
MAX_SKEW: Final = int(CLOCK_SKEW.total_seconds())
"""Seconds a record's expiry may exceed ``now + max_ttl`` (the publisher's clock may be ahead)."""

HOUR: Final = 3600
DAY: Final = 24 * HOUR

Signer = NodeCredentials
"""What signs records: a node's or client's credentials (its key and mesh certificate).  There
is no bare-key signer: no holder accepts a record without a certificate, and the simulator
counts records without signing them."""


class RecordKind(enum.IntEnum):
    """What a record is; the wire carries the number."""

    MANIFEST = 1
    PLACEMENT = 2
    ANNOUNCEMENT = 3
    REVOCATION = 4
    """The mesh CA's revocation list, signed by the CA itself (see :func:`ca_record_key`)."""
    POLICY = 5
    """The mesh policy (coding rules, repair pace, protocol versions), signed by the CA."""
    REFERENCES = 6
    """Tenants' signed references to the object under the key (what keeps it alive)."""


CA_KINDS: Final = frozenset({RecordKind.REVOCATION, RecordKind.POLICY})
"""Kinds only the mesh CA publishes: the record is signed with the CA key and carries the CA
certificate, its key is derived from that certificate, and ``sequence`` is the number the CA
gave the document, so a holder keeps the newest and a member can neither forge nor roll back."""
MEMBER_KINDS: Final = tuple(kind for kind in RecordKind if kind not in CA_KINDS)
"""Kinds a member (a node or client) publishes, signed with its own certificate."""


@dataclasses.dataclass(frozen=True, slots=True)
class KindRules:
    """Limits of one record kind: value size in bytes, lifetime and republish period in seconds."""

    max_value: int
    max_ttl: int
    republish_every: int


RULES: Final[dict[RecordKind, KindRules]] = {
    RecordKind.MANIFEST: KindRules(MAX_RECORD_VALUE, 30 * DAY, DAY),
    RecordKind.PLACEMENT: KindRules(1024 * 1024, 7 * DAY, DAY),
    RecordKind.ANNOUNCEMENT: KindRules(4 * 1024, HOUR, 15 * 60),
    RecordKind.REVOCATION: KindRules(MAX_CRL_BYTES, 40 * DAY, DAY),
    RecordKind.POLICY: KindRules(MAX_POLICY_BYTES, 40 * DAY, DAY),
    RecordKind.REFERENCES: KindRules(MAX_REFERENCES_VALUE, 30 * DAY, DAY),
}


class RejectReason(enum.StrEnum):
    """Why a record was refused; the string goes into ``StoreReply.reason``."""

    BAD_SIGNATURE = "bad-signature"
    EXPIRED = "expired"
    TOO_FAR_IN_FUTURE = "too-far-in-future"
    TOO_LARGE = "too-large"
    UNKNOWN_KIND = "unknown-kind"
    BAD_KEY = "bad-key"
    BAD_VALUE = "bad-value"
    UNCERTIFIED = "uncertified"
    """The publisher's certificate is missing, not the mesh CA's, expired, not yet valid, or
    not for ``publisher_key`` (a throw-away key, or someone else's certificate)."""
    REVOKED = "revoked"
    """The mesh CA revoked the publisher's certificate."""
    STALE = "stale"
    """A store holds a newer version from the same publisher (or a conflicting one as new)."""
    FULL = "full"
    """A store has no room (records, bytes, or publishers for this key): try the next peer."""
    OVER_QUOTA = "over-quota"
    """The publisher already holds its quota of records or bytes in this store."""


@dataclasses.dataclass(frozen=True, slots=True)
class RecordInfo:
    """What verifying a record established: who published it and what its certificate proves
    (``certificate``), and for announcements what the node said (``announcement``)."""

    kind: RecordKind
    key: NodeId
    publisher: NodeId
    sequence: int
    expires_at: int
    certificate: PeerIdentity
    announcement: Announcement | None = None

    @property
    def valid_until(self) -> int:
        """The last second the record may be used: its expiry, or its certificate's end."""
        return min(self.expires_at, math.floor(self.certificate.not_after.timestamp()))


def manifest_key(object_id: bytes) -> NodeId:
    """The DHT key of an object's manifest and placement records: its id's first 20 bytes.

    Raises :class:`LocalProtocolError` if ``object_id`` is shorter than 20 bytes.
    """
    if not isinstance(object_id, bytes) or len(object_id) < NODE_ID_BYTES:
        raise LocalProtocolError(
            f"an object id has at least {NODE_ID_BYTES} bytes: {object_id!r:.80}"
        )
    return NodeId(object_id[:NODE_ID_BYTES])


def signed_bytes(
    kind: int,
    key: bytes,
    value: bytes,
    *,
    sequence: int,
    expires_at: int,
    publisher_key: bytes,
    certificate: bytes,
) -> bytes:
    """The bytes a record's signature covers (value and certificate enter as their sha256)."""
    digest = hashlib.sha256(value).digest()
    certificate_digest = hashlib.sha256(certificate).digest()
    fields = [kind, key, digest, sequence, expires_at, publisher_key, certificate_digest]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return RECORD_DOMAIN + packed


def sign_record(
    signer: Signer, kind: RecordKind, key: bytes, value: bytes, *, sequence: int, expires_at: int
) -> SignedRecord:
    """Sign a record as ``signer``, carrying its certificate.

    Raises :class:`LocalProtocolError` if the record breaks a rule that does not depend on
    time (size, the kind's key rule, a malformed announcement, a client announcing) or a field
    is out of range.
    """
    kind = known_kind(kind, LocalProtocolError)
    if kind in CA_KINDS:
        raise LocalProtocolError(f"only the mesh CA signs {kind.name.lower()} records")
    credentials = credentials_of(signer)
    publisher_key = credentials.public_key_bytes()
    publisher = credentials.node_id
    certificate = credentials.certificate_der()
    if len(certificate) > MAX_PUBLISHER_CERTIFICATE:
        raise LocalProtocolError(
            f"refusing to sign: the certificate is {len(certificate)} bytes, records carry at "
            f"most {MAX_PUBLISHER_CERTIFICATE}"
        )
    try:
        _check_content(kind, key, value, publisher)
    except RecordRejected as error:
        raise LocalProtocolError(f"refusing to sign: {error}") from None
    if kind is RecordKind.ANNOUNCEMENT:
        try:
            announcement = decode_announcement(value)
        except RemoteProtocolError as error:
            raise LocalProtocolError(f"refusing to sign: {error}") from None
        problem = announcement_problem(announcement, certificate, credentials.identity)
        if problem is not None:
            raise LocalProtocolError(f"refusing to sign: {problem}")
    if type(sequence) is not int or type(expires_at) is not int:
        raise LocalProtocolError("sequence and expires_at must be ints (Unix seconds for expiry)")
    return sealed_record(
        kind,
        key,
        value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=publisher_key,
        certificate=certificate,
        sign=credentials.sign,
    )


def sealed_record(
    kind: RecordKind,
    key: bytes,
    value: bytes,
    *,
    sequence: int,
    expires_at: int,
    publisher_key: bytes,
    certificate: bytes,
    sign: Callable[[bytes], bytes],
) -> SignedRecord:
    """The record with ``sign``'s signature over its :func:`signed_bytes` (the checks of what
    may be signed are the caller's: :func:`sign_record`, or the CA's own kinds)."""
    data = signed_bytes(
        kind,
        key,
        value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=publisher_key,
        certificate=certificate,
    )
    return SignedRecord(
        kind=int(kind),
        key=NodeId(key),
        value=value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=publisher_key,
        certificate=certificate,
        signature=sign(data),
    )


def renew(record: SignedRecord, signer: Signer, now: float, ttl: int | None = None) -> SignedRecord:
    """The same record (same sequence and value) re-signed to expire ``ttl`` seconds after
    ``now`` (default: the kind's longest TTL), with the signer's current certificate; holders
    take it as a renewal.

    Raises :class:`LocalProtocolError` if ``signer`` is not the record's publisher, or ``ttl``
    is not in ``(0, max_ttl]``.
    """
    kind = known_kind(record.kind, LocalProtocolError)
    if credentials_of(signer).public_key_bytes() != record.publisher_key:
        raise LocalProtocolError("only a record's publisher can renew it; publish your own copy")
    expires_at = math.floor(now) + checked_ttl(kind, ttl)
    return sign_record(
        signer, kind, record.key, record.value, sequence=record.sequence, expires_at=expires_at
    )


def verify_record(record: SignedRecord, now: float, *, trust: TrustAnchor) -> RecordInfo:
    """Check every rule for ``record`` at time ``now`` against the mesh CA ``trust``; return
    what it establishes.

    Raises :class:`RecordRejected` whose ``reason`` names the first rule broken (cheap checks
    first, the signature before the certificate, both before the rules that read the value):
    ``uncertified`` or ``revoked`` when the publisher is not a member of the mesh at ``now``.
    """
    kind = known_kind(record.kind, RecordRejected)
    rules = RULES[kind]
    what = f"{kind.name.lower()} record under {record.key.hex()[:16]}"
    _check_size(kind, record.value)
    if record.expires_at <= now:
        raise RecordRejected(
            f"{what} expired at {record.expires_at} (now {now:.0f}): its publisher must renew it",
            reason=RejectReason.EXPIRED,
        )
    if record.expires_at - now > rules.max_ttl + MAX_SKEW:
        raise RecordRejected(
            f"{what} expires at {record.expires_at}, {record.expires_at - now:.0f} s from now, "
            f"beyond its kind's {rules.max_ttl} s lifetime: check the publisher's clock",
            reason=RejectReason.TOO_FAR_IN_FUTURE,
        )
    data = signed_bytes(
        kind,
        record.key,
        record.value,
        sequence=record.sequence,
        expires_at=record.expires_at,
        publisher_key=record.publisher_key,
        certificate=record.certificate,
    )
    try:
        publisher = verify_signature(record.publisher_key, data, record.signature)
    except IntegrityError as error:
        raise RecordRejected(f"{what}: {error}", reason=RejectReason.BAD_SIGNATURE) from None
    if kind in CA_KINDS:
        return _verify_ca_record(kind, record, publisher, trust, what)
    certificate = publisher_certificate(record, publisher, now, trust)
    _check_content(kind, record.key, record.value, publisher)
    info = RecordInfo(
        kind, NodeId(record.key), publisher, record.sequence, record.expires_at, certificate
    )
    if kind is RecordKind.ANNOUNCEMENT:
        return _verify_announcement(record, info, now, trust)
    return info


def publisher_certificate(
    record: SignedRecord, publisher: NodeId, now: float, trust: TrustAnchor
) -> PeerIdentity:
    """What the record's certificate proves, once the mesh CA vouches for it at ``now`` and it
    certifies ``publisher`` (the node id of ``record.publisher_key``).

    Raises :class:`RecordRejected` with reason ``revoked`` or ``uncertified``.
    """
    who = f"{_kind_name(record.kind)} record by {short_id(publisher)}"
    try:
        certificate = trust.verify_der(record.certificate, datetime.fromtimestamp(now, UTC))
    except PeerRefused as error:
        reason = RejectReason.REVOKED if error.reason == "revoked" else RejectReason.UNCERTIFIED
        raise RecordRejected(
            f"{who} carries a certificate the mesh CA refuses ({error.reason}): {error}",
            reason=reason,
        ) from None
    if certificate.node_id != publisher:
        raise RecordRejected(
            f"{who} carries the certificate of {certificate.describe()}: a record is published "
            f"only with its signer's own mesh certificate (a throw-away key has none)",
            reason=RejectReason.UNCERTIFIED,
        )
    return certificate


def ca_record_key(kind: RecordKind, ca_certificate: x509.Certificate) -> NodeId:
    """Where the mesh CA's record of ``kind`` lives in the DHT: a hash of the kind and the CA
    certificate, so each mesh has its own and nobody else's key collides with it."""
    der = ca_certificate.public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(CA_RECORD_DOMAIN + bytes([int(kind)]) + der).digest()
    return NodeId(digest[:NODE_ID_BYTES])


def _verify_ca_record(
    kind: RecordKind, record: SignedRecord, publisher: NodeId, trust: TrustAnchor, what: str
) -> RecordInfo:
    """The rules of a ``CA_KINDS`` record, once its signature checked out."""
    ca = trust.ca_certificate
    ca_der = ca.public_bytes(serialization.Encoding.DER)
    if record.certificate != ca_der or publisher != ca_publisher(ca).node_id:
        raise RecordRejected(
            f"{what} is not signed by the mesh CA: only the CA publishes it",
            reason=RejectReason.UNCERTIFIED,
        )
    if record.key != ca_record_key(kind, ca):
        raise RecordRejected(
            f"{what} is not under this mesh's key for it", reason=RejectReason.BAD_KEY
        )
    try:
        if kind is RecordKind.POLICY:
            number = decode_policy(record.value).sequence
        else:
            number = parse_revocation_list(record.value, ca).number
    except (IdentityError, RemoteProtocolError) as error:
        raise RecordRejected(f"{what}: {error}", reason=RejectReason.BAD_VALUE) from None
    if number != record.sequence:
        raise RecordRejected(
            f"{what} has sequence {record.sequence} but holds document number {number}",
            reason=RejectReason.BAD_VALUE,
        )
    return RecordInfo(
        kind, NodeId(record.key), publisher, record.sequence, record.expires_at, ca_publisher(ca)
    )


def _kind_name(kind: int) -> str:
    try:
        return RecordKind(kind).name.lower()
    except ValueError:
        return f"kind-{kind}"


def _verify_announcement(
    record: SignedRecord, info: RecordInfo, now: float, trust: TrustAnchor
) -> RecordInfo:
    try:
        announcement, _ = verify_announcement(record.value, info.publisher, trust, now)
    except RemoteProtocolError as error:
        raise RecordRejected(str(error), reason=RejectReason.BAD_VALUE) from None
    problem = announcement_problem(announcement, record.certificate, info.certificate)
    if problem is not None:
        raise RecordRejected(problem, reason=RejectReason.BAD_VALUE)
    return dataclasses.replace(info, announcement=announcement)


def _check_content(kind: RecordKind, key: bytes, value: bytes, publisher: NodeId) -> None:
    """The rules that tie key and value together.  Raises :class:`RecordRejected`."""
    _check_size(kind, value)
    if not isinstance(key, bytes) or len(key) != NODE_ID_BYTES:
        raise RecordRejected(f"a record key is {NODE_ID_BYTES} bytes", reason=RejectReason.BAD_KEY)
    if kind is RecordKind.MANIFEST:
        if not value:
            raise RecordRejected("a manifest record cannot be empty", reason=RejectReason.BAD_VALUE)
        actual = hashlib.sha256(value).digest()[:NODE_ID_BYTES]
        if actual != key:
            raise RecordRejected(
                f"manifest stored under key {key.hex()[:16]} hashes to {actual.hex()[:16]}: it is "
                f"another object's manifest, or corrupt",
                reason=RejectReason.BAD_KEY,
            )
    elif kind is RecordKind.REFERENCES:
        try:
            references = decode_references(value)
        except RemoteProtocolError as error:
            raise RecordRejected(str(error), reason=RejectReason.BAD_VALUE) from None
        if not references:
            raise RecordRejected(
                "a references record lists one at least", reason=RejectReason.BAD_VALUE
            )
        if any(r.object_id[:NODE_ID_BYTES] != key for r in references):
            raise RecordRejected(
                f"references stored under key {key.hex()[:16]} name another object",
                reason=RejectReason.BAD_KEY,
            )
    elif kind is RecordKind.ANNOUNCEMENT and key != publisher:
        raise RecordRejected(
            f"announcement by node {short_id(publisher)} is stored under {key.hex()[:16]}: a node "
            f"announces only itself, under its own id",
            reason=RejectReason.BAD_KEY,
        )


def _check_size(kind: RecordKind, value: bytes) -> None:
    limit = RULES[kind].max_value
    if len(value) > limit:
        raise RecordRejected(
            f"a {kind.name.lower()} record holds at most {limit} bytes, got {len(value)}",
            reason=RejectReason.TOO_LARGE,
        )


def known_kind(kind: int, error: type[RecordRejected] | type[LocalProtocolError]) -> RecordKind:
    try:
        return RecordKind(kind)
    except ValueError:
        message = (
            f"record kind {kind!r} is unknown (known: {', '.join(k.name for k in RecordKind)})"
        )
        if error is RecordRejected:
            raise RecordRejected(message, reason=RejectReason.UNKNOWN_KIND) from None
        raise LocalProtocolError(message) from None


def credentials_of(signer: Signer) -> NodeCredentials:
    if isinstance(signer, NodeCredentials):
        return signer
    raise LocalProtocolError(
        f"records are signed with NodeCredentials (a key and its mesh certificate), not "
        f"{signer!r:.60}: holders refuse records without a certificate"
    )


def checked_ttl(kind: RecordKind, ttl: int | None) -> int:
    max_ttl = RULES[kind].max_ttl
    if ttl is None:
        return max_ttl
    if type(ttl) is not int or not 0 < ttl <= max_ttl:
        raise LocalProtocolError(
            f"a {kind.name.lower()} record's ttl is 1..{max_ttl} s, got {ttl!r}"
        )
    return ttl
