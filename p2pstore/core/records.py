"""Signed DHT records: what each kind may hold, when one is refused, who holds and republishes it.

Strategy: a record must be checkable by anyone who receives it, whoever relayed it, so every
rule here is a pure function of the record, ``now`` and the mesh CA.  The publisher signs a
domain-separated digest of everything but the signature (``RECORD_DOMAIN`` + msgpack of
``[kind, key, sha256(value), sequence, expires_at, publisher_key]``: hashing the value first
keeps an 8 MiB manifest from being copied and hashed twice by Ed25519).  Each kind sets a size
limit, a longest lifetime and a rule tying the key to the value or the publisher:

* MANIFEST, key = object id[:20], and the value must hash to it, so nobody can store a wrong
  manifest under an object's key (self-certifying, like fragments).
* PLACEMENT, key = object id[:20]; the value is opaque here (the placement issue gives it
  meaning); ``sequence`` orders the versions one publisher writes.
* ANNOUNCEMENT, key = the publisher's own node id; its certificate must verify and name the
  datacenter and region announced (see ``announcements``).

Lifetimes: a publisher republishes at ``republish_every`` (a quarter of the longest TTL or
less, so three lost rounds are survived), re-signing with a fresh expiry each time.  Manifests
are immutable, so a long life (30 days) only costs holders memory and lets an object outlive a
month-long absence of everyone who publishes it; placements change when repair moves
fragments, and a holder that missed an update keeps serving the old version until it expires,
so they live 7 days; announcements carry free capacity and reachability, which go stale
quickly, so a dead node vanishes from the DHT within an hour.

Holders (``RecordStore``) keep one record per (kind, key, publisher): a newer version replaces
it when its ``(sequence, expires_at)`` is larger (a higher sequence is a new version, the same
sequence with a later expiry a renewal).  When full, a store refuses instead of evicting: any
eviction order lets whoever floods a node choose what it forgets, while a refusal only sends
the publisher to the next closest peer.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import heapq
import math
from typing import Final

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pstore.core.announcements import Announcement, decode_announcement, verify_announcement
from p2pstore.errors import (
    IntegrityError,
    LocalProtocolError,
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
    node_id_from_public_key,
    public_key_bytes,
    short_id,
    verify_signature,
)
from p2pstore.wire.dht import MAX_RECORD_VALUE, MAX_RECORDS_PER_REPLY, SignedRecord

RECORD_DOMAIN: Final = b"p2pstore-record-v1\0"
MAX_SKEW: Final = int(CLOCK_SKEW.total_seconds())
"""Seconds a record's expiry may exceed ``now + max_ttl`` (the publisher's clock may be ahead)."""
RECORD_OVERHEAD: Final = 256
"""Bytes a held record is charged besides its value (key, public key, signature, bookkeeping)."""

HOUR: Final = 3600
DAY: Final = 24 * HOUR

Signer = NodeCredentials | Ed25519PrivateKey
"""What signs records: a node's credentials, or a bare key (the simulator, tests)."""


class RecordKind(enum.IntEnum):
    """What a record is; the wire carries the number."""

    MANIFEST = 1
    PLACEMENT = 2
    ANNOUNCEMENT = 3


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
    UNVERIFIABLE = "unverifiable"
    """An announcement was checked without the mesh CA (a holder must pass ``trust``)."""
    STALE = "stale"
    """A store holds a newer version from the same publisher (or a conflicting one as new)."""
    FULL = "full"
    """A store has no room (records, bytes, or publishers for this key): try the next peer."""


@dataclasses.dataclass(frozen=True, slots=True)
class RecordInfo:
    """What verifying a record established: who published it, and for announcements what the
    node said (``announcement``) and what its certificate proves (``certificate``)."""

    kind: RecordKind
    key: NodeId
    publisher: NodeId
    sequence: int
    expires_at: int
    announcement: Announcement | None = None
    certificate: PeerIdentity | None = None


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
    kind: int, key: bytes, value: bytes, *, sequence: int, expires_at: int, publisher_key: bytes
) -> bytes:
    """The bytes a record's signature covers (the value enters as its sha256)."""
    digest = hashlib.sha256(value).digest()
    fields = [kind, key, digest, sequence, expires_at, publisher_key]
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return RECORD_DOMAIN + packed


def sign_record(
    signer: Signer, kind: RecordKind, key: bytes, value: bytes, *, sequence: int, expires_at: int
) -> SignedRecord:
    """Sign a record as ``signer``.

    Raises :class:`LocalProtocolError` if the record breaks a rule that does not depend on
    time (size, the kind's key rule, a malformed announcement) or a field is out of range.
    """
    kind = _known_kind(kind, LocalProtocolError)
    private_key = _private_key(signer)
    publisher_key = public_key_bytes(private_key.public_key())
    publisher = node_id_from_public_key(private_key.public_key())
    try:
        _check_content(kind, key, value, publisher)
    except RecordRejected as error:
        raise LocalProtocolError(f"refusing to sign: {error}") from None
    if kind is RecordKind.ANNOUNCEMENT:
        try:
            decode_announcement(value)
        except RemoteProtocolError as error:
            raise LocalProtocolError(f"refusing to sign: {error}") from None
    if type(sequence) is not int or type(expires_at) is not int:
        raise LocalProtocolError("sequence and expires_at must be ints (Unix seconds for expiry)")
    data = signed_bytes(
        kind, key, value, sequence=sequence, expires_at=expires_at, publisher_key=publisher_key
    )
    return SignedRecord(
        kind=int(kind),
        key=NodeId(key),
        value=value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=publisher_key,
        signature=private_key.sign(data),
    )


def renew(record: SignedRecord, signer: Signer, now: float, ttl: int | None = None) -> SignedRecord:
    """The same record (same sequence and value) re-signed to expire ``ttl`` seconds after
    ``now`` (default: the kind's longest TTL); holders take it as a renewal.

    Raises :class:`LocalProtocolError` if ``signer`` is not the record's publisher, or ``ttl``
    is not in ``(0, max_ttl]``.
    """
    kind = _known_kind(record.kind, LocalProtocolError)
    if _public_key(signer) != record.publisher_key:
        raise LocalProtocolError("only a record's publisher can renew it; publish your own copy")
    expires_at = math.floor(now) + _ttl(kind, ttl)
    return sign_record(
        signer, kind, record.key, record.value, sequence=record.sequence, expires_at=expires_at
    )


def verify_record(
    record: SignedRecord, now: float, *, trust: TrustAnchor | None = None
) -> RecordInfo:
    """Check every rule for ``record`` at time ``now``; return what it establishes.

    ``trust`` (the mesh CA) is required for announcements.  Raises :class:`RecordRejected`
    whose ``reason`` names the first rule broken (cheap checks first, the signature before the
    rules that read the value).
    """
    kind = _known_kind(record.kind, RecordRejected)
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
    )
    try:
        publisher = verify_signature(record.publisher_key, data, record.signature)
    except IntegrityError as error:
        raise RecordRejected(f"{what}: {error}", reason=RejectReason.BAD_SIGNATURE) from None
    _check_content(kind, record.key, record.value, publisher)
    info = RecordInfo(kind, NodeId(record.key), publisher, record.sequence, record.expires_at)
    if kind is RecordKind.ANNOUNCEMENT:
        return _verify_announcement(record, info, now, trust)
    return info


def _verify_announcement(
    record: SignedRecord, info: RecordInfo, now: float, trust: TrustAnchor | None
) -> RecordInfo:
    who = f"announcement by node {short_id(info.publisher)}"
    if trust is None:
        raise RecordRejected(
            f"{who} needs the mesh CA to verify its certificate: pass trust=",
            reason=RejectReason.UNVERIFIABLE,
        )
    try:
        announcement, certificate = verify_announcement(record.value, info.publisher, trust, now)
    except RemoteProtocolError as error:
        raise RecordRejected(str(error), reason=RejectReason.BAD_VALUE) from None
    return dataclasses.replace(info, announcement=announcement, certificate=certificate)


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


def _known_kind(kind: int, error: type[RecordRejected] | type[LocalProtocolError]) -> RecordKind:
    try:
        return RecordKind(kind)
    except ValueError:
        message = (
            f"record kind {kind!r} is unknown (known: {', '.join(k.name for k in RecordKind)})"
        )
        if error is RecordRejected:
            raise RecordRejected(message, reason=RejectReason.UNKNOWN_KIND) from None
        raise LocalProtocolError(message) from None


def _public_key(signer: Signer) -> bytes:
    return public_key_bytes(_private_key(signer).public_key())


def _private_key(signer: Signer) -> Ed25519PrivateKey:
    if isinstance(signer, NodeCredentials):
        return signer.private_key
    if isinstance(signer, Ed25519PrivateKey):
        return signer
    raise LocalProtocolError(
        f"records are signed with NodeCredentials or an Ed25519 key, not {signer!r:.60}"
    )


def _ttl(kind: RecordKind, ttl: int | None) -> int:
    max_ttl = RULES[kind].max_ttl
    if ttl is None:
        return max_ttl
    if type(ttl) is not int or not 0 < ttl <= max_ttl:
        raise LocalProtocolError(
            f"a {kind.name.lower()} record's ttl is 1..{max_ttl} s, got {ttl!r}"
        )
    return ttl


def held_size(record: SignedRecord) -> int:
    """The bytes a store charges for holding ``record``."""
    return len(record.value) + RECORD_OVERHEAD


class PutResult(enum.StrEnum):
    """What :meth:`RecordStore.put` did with a record it accepted."""

    STORED = "stored"
    """New for its (kind, key, publisher)."""
    REPLACED = "replaced"
    """A newer version (higher sequence) or a renewal (same sequence, later expiry)."""
    UNCHANGED = "unchanged"
    """The very record was already held (a republish before any renewal)."""


_Slot = tuple[int, bytes]


class RecordStore:
    """The records a node holds for others, bounded in count, bytes and publishers per key.

    Pure: every call takes ``now``; nothing is evicted before it expires (see the module
    docstring).  Expired records are invisible at once and forgotten by :meth:`expire` (which
    ``put`` also runs when it finds the store full).
    """

    __slots__ = (
        "_bytes",
        "_count",
        "_expiry",
        "_groups",
        "changes",
        "max_bytes",
        "max_per_key",
        "max_records",
    )

    def __init__(
        self, max_records: int, max_bytes: int, max_per_key: int = MAX_RECORDS_PER_REPLY
    ) -> None:
        """Raises :class:`LocalProtocolError` unless every limit is positive."""
        if min(max_records, max_bytes, max_per_key) <= 0:
            raise LocalProtocolError("a record store needs positive limits")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_per_key = max_per_key
        self._groups: dict[_Slot, dict[NodeId, SignedRecord]] = {}
        self._expiry: list[tuple[int, int, bytes, NodeId]] = []  # lazy heap, may hold stale entries
        self._count = 0
        self._bytes = 0
        self.changes = 0
        """Bumped whenever a record is added, replaced or forgotten: a saver skips a store
        that has not changed since its last save."""

    def __len__(self) -> int:
        return self._count

    @property
    def bytes_held(self) -> int:
        """Bytes charged for the records held (values plus ``RECORD_OVERHEAD`` each)."""
        return self._bytes

    def put(
        self, record: SignedRecord, now: float, *, trust: TrustAnchor | None = None
    ) -> PutResult:
        """Verify ``record`` and hold it.

        Raises :class:`RecordRejected`: from :func:`verify_record` if the record is invalid;
        with reason ``stale`` if the version held from its publisher is newer, i.e. has a larger
        ``(sequence, expires_at)`` (or the same pair for a different record: first come wins);
        with reason ``full`` if there is no room even after forgetting expired records.
        """
        info = verify_record(record, now, trust=trust)
        slot = (int(info.kind), bytes(record.key))
        held = self._groups.get(slot, {}).get(info.publisher)
        if held is not None and held.expires_at <= now:
            self._remove(slot, info.publisher)
            held = None
        what = f"{info.kind.name.lower()} record of node {short_id(info.publisher)}"
        if held is not None:
            if held == record:
                return PutResult.UNCHANGED
            if (record.sequence, record.expires_at) <= (held.sequence, held.expires_at):
                raise RecordRejected(
                    f"{what} (sequence {record.sequence}, expiry {record.expires_at}) is not "
                    f"newer than the one held (sequence {held.sequence}, expiry "
                    f"{held.expires_at}): publish with a higher sequence",
                    reason=RejectReason.STALE,
                )
            extra_records, extra_bytes = 0, held_size(record) - held_size(held)
        else:
            extra_records, extra_bytes = 1, held_size(record)
        if not self._has_room(slot, extra_records, extra_bytes):
            self.expire(now)
            if not self._has_room(slot, extra_records, extra_bytes):
                raise RecordRejected(
                    f"no room for the {what} ({len(self)}/{self.max_records} records, "
                    f"{self.bytes_held}/{self.max_bytes} bytes held): store it on the next "
                    f"closest peer",
                    reason=RejectReason.FULL,
                )
        if held is not None:
            self._remove(slot, info.publisher)
        self._groups.setdefault(slot, {})[info.publisher] = record
        self.changes += 1
        self._count += 1
        self._bytes += held_size(record)
        heapq.heappush(self._expiry, (record.expires_at, *slot, info.publisher))
        if len(self._expiry) > 2 * self._count + 64:
            self._rebuild_expiry()
        return PutResult.REPLACED if held is not None else PutResult.STORED

    def get(self, kind: int, key: bytes, now: float) -> list[SignedRecord]:
        """The unexpired records under (kind, key), highest sequence first, then by publisher."""
        group = self._groups.get((kind, key), {})
        alive = [(p, r) for p, r in group.items() if r.expires_at > now]
        alive.sort(key=lambda item: (-item[1].sequence, item[0]))
        return [r for _, r in alive]

    def expire(self, now: float) -> int:
        """Forget every record expired at ``now``; return how many were removed."""
        removed = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, kind, key, publisher = heapq.heappop(self._expiry)
            held = self._groups.get((kind, key), {}).get(publisher)
            if held is not None and held.expires_at <= now:
                self._remove((kind, key), publisher)
                removed += 1
        return removed

    def records_for_refresh(self, now: float) -> list[SignedRecord]:
        """Every unexpired record held, grouped by (kind, key) in that order, each group as
        :meth:`get` orders it: what a holder offers a peer that became closer to their keys."""
        return [record for kind, key in sorted(self._groups) for record in self.get(kind, key, now)]

    def _has_room(self, slot: _Slot, extra_records: int, extra_bytes: int) -> bool:
        if self._bytes + extra_bytes > self.max_bytes:
            return False
        if extra_records == 0:
            return True
        return self._count < self.max_records and len(self._groups.get(slot, {})) < self.max_per_key

    def _remove(self, slot: _Slot, publisher: NodeId) -> None:
        group = self._groups[slot]
        record = group.pop(publisher)
        if not group:
            del self._groups[slot]
        self.changes += 1
        self._count -= 1
        self._bytes -= held_size(record)

    def _rebuild_expiry(self) -> None:
        self._expiry = [
            (record.expires_at, *slot, publisher)
            for slot, group in self._groups.items()
            for publisher, record in group.items()
        ]
        heapq.heapify(self._expiry)


def next_sequence(previous: int | None, now: float) -> int:
    """A sequence number for a new version: milliseconds since the epoch, or one more than
    ``previous`` if that is not larger.  Clock-based, so a publisher that restarted without its
    state still outranks what it published before (unless its clock went back)."""
    stamp = math.floor(now * 1000)
    return stamp if previous is None or stamp > previous else previous + 1


@dataclasses.dataclass(slots=True)
class _Published:
    record: SignedRecord
    kind: RecordKind
    ttl: int
    last_published: float


class PublishedRecords:
    """The records a node publishes itself, and when each is due to be sent again.

    Each republish renews the record (same sequence, fresh expiry), so a record lives as long as
    its publisher keeps running :meth:`due`.  One record per (kind, key): a new version replaces
    the old.  Pure: the driver sends what :meth:`publish` and :meth:`due` return as STOREs to
    the closest peers, and wakes up at :meth:`next_due`.
    """

    __slots__ = ("_records", "_signer", "publisher_key")

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        self.publisher_key = _public_key(signer)
        self._records: dict[_Slot, _Published] = {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, kind: int, key: bytes) -> SignedRecord | None:
        """The current version published under (kind, key), if any."""
        entry = self._records.get((kind, key))
        return None if entry is None else entry.record

    def publish(
        self, kind: RecordKind, key: bytes, value: bytes, now: float, *, ttl: int | None = None
    ) -> SignedRecord:
        """Sign a new version of (kind, key) (see :func:`next_sequence`), remember it as sent at
        ``now``, and return it for the driver to store.  Raises :class:`LocalProtocolError` as
        :func:`sign_record` does, or for a ``ttl`` outside the kind's limit."""
        kind = _known_kind(kind, LocalProtocolError)
        ttl = _ttl(kind, ttl)
        previous = self.get(kind, key)
        sequence = next_sequence(None if previous is None else previous.sequence, now)
        expires_at = math.floor(now) + ttl
        record = sign_record(
            self._signer, kind, key, value, sequence=sequence, expires_at=expires_at
        )
        self._records[(kind, key)] = _Published(record, kind, ttl, now)
        return record

    def add(self, record: SignedRecord, now: float) -> None:
        """Keep republishing ``record`` (signed elsewhere by this publisher), sent at ``now``.

        Raises :class:`LocalProtocolError` if another key signed it.
        """
        kind = _known_kind(record.kind, LocalProtocolError)
        if record.publisher_key != self.publisher_key:
            raise LocalProtocolError("this node can only republish the records it signed")
        ttl = max(1, min(RULES[kind].max_ttl, record.expires_at - math.floor(now)))
        self._records[(kind, record.key)] = _Published(record, kind, ttl, now)

    def remove(self, kind: int, key: bytes) -> bool:
        """Stop republishing (kind, key); the copies held elsewhere expire.  True if it was kept."""
        return self._records.pop((kind, key), None) is not None

    def due(self, now: float, interval: float | None = None) -> list[SignedRecord]:
        """Renew and return, in (kind, key) order, every record last sent ``interval`` seconds
        ago or more (default: its kind's ``republish_every``); they count as sent at ``now``."""
        out = []
        for slot in sorted(self._records):
            entry = self._records[slot]
            if self._due_at(entry, interval) <= now:
                entry.record = renew(entry.record, self._signer, now, entry.ttl)
                entry.last_published = now
                out.append(entry.record)
        return out

    def next_due(self, interval: float | None = None) -> float | None:
        """When :meth:`due` next has something to return (None when nothing is published)."""
        return min((self._due_at(e, interval) for e in self._records.values()), default=None)

    @staticmethod
    def _due_at(entry: _Published, interval: float | None) -> float:
        every = RULES[entry.kind].republish_every if interval is None else interval
        return entry.last_published + every
