"""Fragment leases: what keeps a fragment on its holder, and when the holder frees it.

Strategy: deletion needs no trusted deleter (DESIGN, "Trust").  Nobody ever tells a holder
"delete this"; a holder keeps a fragment while a lease on it is renewed, and an object's
stewards renew it only while they have verified a live reference (``core.references``).  So:

* one dishonest steward cannot delete: the holder keeps the *latest* expiry any eligible
  steward signed, so a short or back-dated lease (a "release") shortens nothing while an
  honest steward keeps renewing;
* it cannot keep garbage forever beyond its own share: a lease lives at most
  :data:`MAX_LEASE_TTL` past its signing, whatever it says, and a holder applies one
  steward's leases up to :class:`LeaseBounds` of its store;
* only a steward *eligible* for the object signs a lease that counts: fewer than
  :data:`STEWARD_WIDTH` nodes the holder knows are closer to the object's key than it;
* retention is never the steward's word: the holder extends an object's :class:`Retention`
  only from what the tenant signed (``core.references``), never shortens it, and frees
  nothing retained or under legal hold, whatever any lease says.

When a fragment goes (:func:`free_at`): after the latest lease expiry plus a grace period
(the undo window, ``[gc] grace_period``), and never earlier than the grace after the holder
started (a holder that was down missed renewals; it gives honest stewards a grace to reach it
before it judges a lapse).  A fragment never leased (an interrupted put, junk from any
identity) goes a grace after it was last stored; one stored before leases existed (``stored_at``
unknown) is kept until a lease first covers it: an upgrade frees nothing by surprise.  A
fragment stored and then stated in a receipt (the end of a put) gets an initial lease of
:data:`LEASE_TTL` from the holder itself, so a fresh put is safe before its stewards renew.

Pure: time comes in as ``now`` (Unix seconds).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable
from typing import Any, Final

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pstore.errors import LocalProtocolError, RemoteProtocolError
from p2pstore.identity import CLOCK_SKEW, NodeCredentials, short_id, verify_signature
from p2pstore.identity.nodeid import public_key_bytes
from p2pstore.wire.fragments import MAX_IDS_PER_QUERY
from p2pstore.wire.leases import LeaseItem, RenewLeases, RetentionProof
from p2pstore.wire.schema import Record, schema_of

LEASE_DOMAIN: Final = b"p2pstore-lease-v1\0"
DAY: Final = 86400
LEASE_TTL: Final = 3 * DAY
"""Seconds a lease (and the initial lease of a fresh put) lasts: stewards renew each round, so
three days survive a long steward outage, and an unreferenced object goes three days plus the
grace after its last reference."""
MAX_LEASE_TTL: Final = 7 * DAY
"""A lease counts at most this long after it was signed, whatever expiry it states."""
DEFAULT_GRACE: Final = 7 * DAY
"""The undo window: seconds between a lease's lapse and the space being freed."""
STEWARD_WIDTH: Final = 8
"""A lease counts if fewer than this many nodes the holder knows are closer to the object's
key than its steward: wider than the stewards' own set (the closest live node and the few it
pings), so holders and stewards with different views of the mesh still agree."""
STEWARD_SHARE: Final = 4
"""One steward's leases keep alive at most 1/STEWARD_SHARE of a holder's quota."""
MAX_SKEW_MS: Final = int(CLOCK_SKEW.total_seconds() * 1000)


class Fate(enum.Enum):
    """A holder's decision about one fragment."""

    KEEP = "keep"
    FREE = "free"


@dataclasses.dataclass(frozen=True, slots=True)
class Retention:
    """The latest retention date (Unix seconds, 0: none) and legal hold shown for an object."""

    retain_until: int = 0
    legal_hold: bool = False

    def extended(self, other: Retention) -> Retention:
        """The join: the later date, and a hold if either has one (never shorter)."""
        return Retention(
            max(self.retain_until, other.retain_until), self.legal_hold or other.legal_hold
        )

    def holds(self, now: float) -> bool:
        """True while the object may not be freed."""
        return self.legal_hold or now < self.retain_until


@dataclasses.dataclass(frozen=True, slots=True)
class FragmentLife:
    """What a holder knows about one fragment's life, in Unix seconds.

    ``stored_at``: when it was last stored (a put of a fragment already held stores it again:
    a convergent put of deleted bytes must not lose them to a lapse); None: stored before
    leases existed.  ``leased_until`` None: never leased."""

    stored_at: float | None
    leased_until: float | None
    retention: Retention = Retention()


def free_at(life: FragmentLife, *, grace: float, up_since: float) -> float | None:
    """When the holder may free the fragment (None: not until something changes).

    See the module docstring; ``up_since`` is when the holder last started."""
    if life.retention.legal_hold:
        return None
    known = [t for t in (life.stored_at, life.leased_until) if t is not None]
    if not known:
        return None
    return max(*known, up_since, float(life.retention.retain_until)) + grace


def decide(life: FragmentLife, now: float, *, grace: float, up_since: float) -> Fate:
    """Keep or free the fragment at ``now``."""
    when = free_at(life, grace=grace, up_since=up_since)
    return Fate.FREE if when is not None and now >= when else Fate.KEEP


def eligible(
    steward: bytes, key: bytes, known: Iterable[bytes], width: int = STEWARD_WIDTH
) -> bool:
    """Whether ``steward`` is among the ``width`` closest to ``key`` (an object's DHT key)
    of the node ids ``known`` to the holder (itself included or not)."""
    target = int.from_bytes(key, "big")
    mine = int.from_bytes(steward, "big") ^ target
    closer = 0
    for node_id in set(known):
        if node_id != steward and int.from_bytes(node_id, "big") ^ target < mine:
            closer += 1
            if closer >= width:
                return False
    return True


RENEWERS: Final = 3
"""Nodes that renew an object's leases: the ones fewer than this many known nodes are closer
to its key than (the elected steward and its next closest), so one hostile renewer that stops
changes nothing while another renews."""


def keeper(fragment_id: bytes, holders: Iterable[bytes]) -> bytes | None:
    """The one holder of a share whose copy is leased (the closest to the fragment id): every
    renewer picks the same, and a surplus copy -- left on a holder that returned after a
    repair rebuilt the share elsewhere, or by two stewards repairing at once -- lapses."""
    target = int.from_bytes(fragment_id[:20], "big")
    return min(holders, key=lambda h: int.from_bytes(h, "big") ^ target, default=None)


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseBounds:
    """How much of a holder's store one steward's leases may keep alive."""

    quota_bytes: int
    share: int = STEWARD_SHARE

    def __post_init__(self) -> None:
        if self.quota_bytes < 0 or self.share < 1:
            raise ValueError("a lease bound needs a quota >= 0 and a share >= 1")

    @property
    def per_steward(self) -> int:
        return self.quota_bytes // self.share

    def allows(self, steward_bytes: int, adding: int) -> bool:
        """Whether a steward keeping ``steward_bytes`` alive may lease ``adding`` more."""
        return steward_bytes + adding <= self.per_steward


def signed_bytes(renewal: RenewLeases) -> bytes:
    """What a steward's signature covers: every field of the renewal but the signature."""
    values = schema_of(RenewLeases).values(renewal)[:-1]
    packed: bytes = msgpack.packb(values, use_bin_type=True, default=record_fields)
    return LEASE_DOMAIN + packed


def record_fields(obj: object) -> list[Any]:
    """msgpack's hook for nested records: their fields in wire order."""
    if isinstance(obj, Record):
        return schema_of(type(obj)).values(obj)
    raise TypeError(f"cannot sign a {type(obj).__name__}")


def sign_renewal(
    signer: NodeCredentials | Ed25519PrivateKey,
    holder: bytes,
    items: Iterable[LeaseItem],
    *,
    now: float,
    ttl: float = LEASE_TTL,
    retention: Iterable[RetentionProof] = (),
) -> RenewLeases:
    """Sign, as steward ``signer``, a lease on ``items`` of ``holder`` from ``now`` for ``ttl``
    seconds (``ttl`` may be 0 or negative only in tests of hostile stewards).

    Raises :class:`LocalProtocolError` for more than ``MAX_IDS_PER_QUERY`` fragment ids."""
    private = signer.private_key if isinstance(signer, NodeCredentials) else signer
    items = tuple(items)
    if sum(len(item.fragment_ids) for item in items) > MAX_IDS_PER_QUERY:
        raise LocalProtocolError(f"a renewal leases at most {MAX_IDS_PER_QUERY} fragments")
    issued = math.floor(now * 1000)
    unsigned = RenewLeases(
        holder=holder,
        issued_ms=issued,
        expires_ms=max(0, issued + math.floor(ttl * 1000)),
        items=items,
        retention=tuple(retention),
        steward_key=public_key_bytes(private.public_key()),
        signature=bytes(64),
    )
    return dataclasses.replace(unsigned, signature=private.sign(signed_bytes(unsigned)))


def check_renewal(renewal: RenewLeases, steward: bytes, holder: bytes, now: float) -> float:
    """Check a renewal received from ``steward`` (the session's node id) by ``holder`` at
    ``now``; return the expiry it grants (Unix seconds, capped at :data:`MAX_LEASE_TTL` after
    it was signed and never later than that after ``now``).

    Raises :class:`IntegrityError` for a bad signature or key, :class:`RemoteProtocolError`
    for a renewal meant for another holder, from the future, or with too many fragments.
    Eligibility and bounds are per object and per steward: the caller applies them."""
    who = f"lease renewal from {short_id(steward)}"
    if renewal.holder != holder:
        raise RemoteProtocolError(f"{who} is for node {short_id(renewal.holder)}, not this one")
    if renewal.issued_ms > now * 1000 + MAX_SKEW_MS:
        raise RemoteProtocolError(f"{who} is dated in the future: check the steward's clock")
    if sum(len(item.fragment_ids) for item in renewal.items) > MAX_IDS_PER_QUERY:
        raise RemoteProtocolError(f"{who} leases more than {MAX_IDS_PER_QUERY} fragments")
    verify_signature(
        renewal.steward_key, signed_bytes(renewal), renewal.signature, expected_node_id=steward
    )
    cap_ms = min(
        renewal.issued_ms + MAX_LEASE_TTL * 1000, math.floor(now * 1000) + MAX_LEASE_TTL * 1000
    )
    return min(renewal.expires_ms, cap_ms) / 1000


def initial_lease(stored_at: float, now: float) -> float:
    """The expiry of the lease a holder gives a fragment it states held for the first time
    since it was (last) stored (the end of a put): :data:`LEASE_TTL` from now."""
    return max(stored_at, now) + LEASE_TTL
