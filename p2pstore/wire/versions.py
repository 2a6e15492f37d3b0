"""Which wire protocol versions a node speaks, how two nodes settle on one, and what each
version may carry.

Strategy: a release speaks its own version and the one before, so a mesh upgrades one node at a
time.  ``Hello`` never changes shape (a node of the previous release decodes it strictly: three
fields, and refuses any ``protocol_version`` but its own), so like TLS 1.3's ClientHello it keeps
a legacy field and carries the real offer beside it: ``protocol_version`` is the *oldest* version
offered, which is what the previous release checks, and the full list rides as a ``wire=2,3``
token at the end of ``software``.  A Hello without the token offers only its
``protocol_version``: that is every Hello a previous release sends.  Both ends take the highest
version both offer (:func:`settle`), a pure choice each side makes alike without another round
trip.  After that, a session never sends its peer a message or a record kind its settled
version does not know (:func:`required_version`); the caller hears :class:`PeerTooOld` as the
peer's refusal, because that is what the peer would have answered.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Final

from p2pstore.errors import RemoteProtocolError

from .buckets import BucketPullReply, BucketPush, BucketVersionQuery, BucketVersionReply
from .dht import FindValue, FindValueReply, Store
from .leases import RenewLeases, RenewLeasesReply
from .messages import PROTOCOL_VERSION, Hello, Message

PREVIOUS_VERSION: Final = PROTOCOL_VERSION - 1
SPOKEN_VERSIONS: Final = (PREVIOUS_VERSION, PROTOCOL_VERSION)
"""What this release speaks: its own version and the one before."""
MAX_OFFERED: Final = 8
"""Versions one Hello may offer (the mesh policy names at most as many)."""
MAX_VERSION: Final = 0xFFFF
OFFER_PREFIX: Final = "wire="

MESSAGE_SINCE: Final[Mapping[int, int]] = MappingProxyType(
    {
        RenewLeases.TYPE: 3,
        RenewLeasesReply.TYPE: 3,
        BucketVersionQuery.TYPE: 3,
        BucketVersionReply.TYPE: 3,
    }
)
"""The version that introduced each message newer than ``PREVIOUS_VERSION``'s set; every other
registered message is known to both spoken versions."""
RECORD_KIND_SINCE: Final[Mapping[int, int]] = MappingProxyType({4: 3, 5: 3, 6: 3})
"""Record kinds (``core.records.RecordKind``) newer than the previous version: the CA's
revocation list (4) and mesh policy (5), tenants' references (6).  A version-2 holder refuses
them as unknown kinds."""
ENTRY_OP_SINCE: Final[Mapping[int, int]] = MappingProxyType({5: 3})
"""Bucket entry ops (``core.bucket_entries.Op``) newer than the previous version: RELEASE (5),
which a version-2 replica refuses."""


def settle(ours: Iterable[int], theirs: Iterable[int]) -> int | None:
    """The highest version both sides offer, None if they share none."""
    common = set(ours) & set(theirs)
    return max(common) if common else None


def offer(spoken: Collection[int], allowed: Collection[int] | None) -> tuple[int, ...]:
    """What to offer in a Hello: the versions spoken that the mesh policy allows (all of them
    when it names none, or none this node speaks: then sessions are refused after settling,
    saying why, rather than the node going silent)."""
    kept = tuple(sorted(v for v in spoken if allowed is None or not allowed or v in allowed))
    return kept or tuple(sorted(spoken))


def policy_refusal(settled: int, allowed: Collection[int] | None) -> str | None:
    """Why a session settled on ``settled`` may not go on under the mesh policy's ``allowed``
    versions (None or empty: any); None if it may."""
    if not allowed or settled in allowed:
        return None
    names = ", ".join(map(str, sorted(allowed)))
    return (
        f"the mesh policy allows wire protocol versions {names}, and this session settled on "
        f"version {settled}: upgrade the older node"
    )


def make_hello(versions: Collection[int], listen_address: str, software: str) -> Hello:
    """The Hello offering ``versions``; with one version offered it is exactly the Hello of a
    release that speaks only that one.  Raises ``ValueError`` on an empty or invalid offer."""
    offered = sorted(set(versions))
    if not 0 < len(offered) <= MAX_OFFERED or not 0 < offered[0] <= offered[-1] <= MAX_VERSION:
        raise ValueError(f"offer 1 to {MAX_OFFERED} versions from 1 to {MAX_VERSION}: {versions}")
    if len(offered) > 1:
        software = f"{software} {OFFER_PREFIX}{','.join(map(str, offered))}"
    return Hello(protocol_version=offered[0], listen_address=listen_address, software=software)


def spoken_by(hello: Hello) -> frozenset[int]:
    """The versions a peer's Hello offers.  Raises ``RemoteProtocolError`` on a malformed offer
    (several tokens, more than ``MAX_OFFERED`` versions, a non-number, or a list whose oldest
    is not the Hello's ``protocol_version``)."""
    tokens = [t for t in hello.software.split() if t.startswith(OFFER_PREFIX)]
    if not tokens:
        return frozenset({hello.protocol_version})
    parts = tokens[0][len(OFFER_PREFIX) :].split(",")
    if len(tokens) > 1 or len(parts) > MAX_OFFERED:
        raise RemoteProtocolError(f"Hello offers too many versions: {hello.software[:128]!r}")
    if not all(p.isascii() and p.isdigit() and len(p) <= 5 for p in parts):
        raise RemoteProtocolError(f"Hello offers malformed versions: {tokens[0][:128]!r}")
    versions = frozenset(int(p) for p in parts)
    if min(versions) != hello.protocol_version or max(versions) > MAX_VERSION:
        raise RemoteProtocolError(
            f"Hello says protocol version {hello.protocol_version} but offers {tokens[0][:128]!r}"
            " (the oldest offered must be the protocol version)"
        )
    return versions


def check_protocol_version(hello: Hello, ours: Collection[int] = SPOKEN_VERSIONS) -> int:
    """The version to speak with the peer that sent ``hello``: the highest both offer.

    Raises ``RemoteProtocolError`` naming both offers when there is none (or the offer is
    malformed, see :func:`spoken_by`).
    """
    theirs = spoken_by(hello)
    settled = settle(ours, theirs)
    if settled is None:
        raise RemoteProtocolError(
            f"peer speaks wire protocol {_versions(theirs)} ({hello.software[:128]!r}), this "
            f"node speaks {_versions(ours)}: a release speaks its own version and the one "
            "before, so upgrade the older node one release at a time"
        )
    return settled


def required_version(message: Message) -> int:
    """The oldest version that knows ``message`` and every record kind it carries."""
    needed = MESSAGE_SINCE.get(message.TYPE, PREVIOUS_VERSION)
    if isinstance(message, Store):
        kinds: Iterable[int] = (message.record.kind,)
    elif isinstance(message, FindValue):
        kinds = (message.kind,)
    elif isinstance(message, FindValueReply):
        kinds = (record.kind for record in message.records)
    elif isinstance(message, BucketPush | BucketPullReply):
        ops = (ENTRY_OP_SINCE.get(entry.op, PREVIOUS_VERSION) for entry in message.entries)
        return max([needed, *ops])
    else:
        return needed
    return max([needed, *(RECORD_KIND_SINCE.get(kind, PREVIOUS_VERSION) for kind in kinds)])


def _versions(versions: Collection[int]) -> str:
    ordered = sorted(versions)
    if len(ordered) == 1:
        return f"version {ordered[0]}"
    return "versions " + ", ".join(map(str, ordered))
