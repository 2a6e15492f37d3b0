"""Where stewards learn whether an object is still referenced: REFERENCES records and buckets.

Strategy: a tenant's machine that writes a bucket version signs a reference binding the
object to that version (``core.references``) and publishes it, before the version's PUT
entry, as a REFERENCES record under the object's key (:func:`publish_reference`; its own
earlier references to the object are kept in the same record, since a holder keeps one record
per publisher and key).  The object's steward (:class:`MeshReferences`, the
:class:`~p2pstore.net.leases.ReferenceSource` its lease renewer asks each round):

1. reads every publisher's REFERENCES record for the object (the union: a holder or relay can
   hide a record only if every other shows nothing) and verifies each reference itself;
2. remembers what it verified (a record that expires or is hidden later takes nothing away),
   and, as the object's elected steward, republishes the references not shown dead as its own
   record, so they outlive the client's record (the nodes backing it up read, never publish);
3. at most every ``recheck`` seconds per reference, asks the bucket's replicas for the
   entries about the referenced version (``BucketVersionQuery``), verifies them, and lets
   ``core.reference_evidence`` judge: live, dead only on the tenant's signed words (an
   effective erasure, an expiry, or a PUT most replicas never saw once settled), unknown
   otherwise -- and unknown keeps the object.  The latest retention verified is remembered.

Retention proofs for holders are the tenant's reference and entries, passed on as they are.
Every call has a timeout; what one object may make a steward remember is bounded.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from p2pstore.core.bucket_entries import VerifiedEntry, bucket_id, entry_digest, verify_entry
from p2pstore.core.contact import Contact
from p2pstore.core.leases import Retention
from p2pstore.core.records import RULES, RecordKind, manifest_key, sign_record
from p2pstore.core.reference_evidence import SETTLE, Assessment, Shown, Verdict, assess, combine
from p2pstore.core.references import (
    Liveness,
    ReferenceRejected,
    is_bucket_reference,
    sign_reference,
    signed_bytes,
    verify_reference,
)
from p2pstore.errors import EntryRejected, PutFailed, RemoteProtocolError
from p2pstore.identity import short_id
from p2pstore.net.buckets import BucketService
from p2pstore.net.dht import Dht
from p2pstore.net.publisher import RPC_FAILURES
from p2pstore.wire import (
    BucketEntry,
    BucketVersionQuery,
    BucketVersionReply,
    Reference,
    RetentionProof,
)
from p2pstore.wire.leases import MAX_REFERENCES_PER_RECORD, decode_references, encode_references

log = logging.getLogger("p2pstore.steward")


@dataclass(frozen=True, slots=True)
class ReferenceSettings:
    """How often a steward checks a reference, and how much it asks and remembers."""

    recheck: float = 3600.0
    """Seconds between two readings of an object's references and of a version's entries."""
    settle: float = SETTLE
    replicas: int = 5
    """Replicas of a bucket asked (the bucket service's ``replicas``)."""
    rpc_timeout: float = 10.0
    max_per_object: int = 4 * MAX_REFERENCES_PER_RECORD
    forget_after: float = 86400.0
    """An object no round asked about for this long is forgotten (no longer stewarded here)."""


@dataclass
class _Known:
    reference: Reference
    assessment: Assessment | None = None
    checked_at: float = -math.inf
    retention: Retention = field(default_factory=Retention)


@dataclass
class _Object:
    references: dict[bytes, _Known] = field(default_factory=dict)
    read_at: float = -math.inf
    asked_at: float = -math.inf
    published: frozenset[bytes] = frozenset()


class MeshReferences:
    """A steward's :class:`~p2pstore.net.leases.ReferenceSource` (see the module docstring)."""

    def __init__(
        self,
        dht: Dht,
        settings: ReferenceSettings | None = None,
        *,
        buckets: BucketService | None = None,
    ) -> None:
        """``buckets``: this node's bucket replicas, asked locally when it is one of the
        closest to a bucket (a lookup never returns the node itself)."""
        self.dht = dht
        self.buckets = buckets
        self.settings = settings or ReferenceSettings()
        self._objects: dict[bytes, _Object] = {}

    async def liveness(
        self, object_id: bytes, now: float, *, publish: bool = True
    ) -> Liveness | None:
        known = self._objects.setdefault(object_id, _Object())
        known.asked_at = now
        self._forget_stale(now)
        if now - known.read_at >= self.settings.recheck:
            known.read_at = now
            await self._read(object_id, known, now)
        for one in known.references.values():
            due = now - one.checked_at >= self.settings.recheck
            if one.assessment is None or due or not is_bucket_reference(one.reference):
                await self._check(one, now)
        verdict = combine(k.assessment for k in known.references.values() if k.assessment)
        if publish:
            await self._republish(object_id, known)
        return verdict

    def proofs(self, object_id: bytes) -> list[RetentionProof]:
        known = self._objects.get(object_id)
        if known is None:
            return []
        return [
            RetentionProof(reference=one.reference, entry=entry)
            for one in known.references.values()
            if one.assessment is not None
            for entry in one.assessment.proof_entries
        ]

    def forget(self, object_id: bytes) -> None:
        """Stop republishing the object's references (this node no longer stewards it)."""
        self._objects.pop(object_id, None)
        self.dht.published.remove(RecordKind.REFERENCES, manifest_key(object_id))

    # -- reading ------------------------------------------------------------------------------

    async def _read(self, object_id: bytes, known: _Object, now: float) -> None:
        """Verify and remember the references every publisher's record shows."""
        records = await self.dht.find_records(RecordKind.REFERENCES, manifest_key(object_id))
        trust = self.dht.trust()
        for record in records:
            try:
                references = decode_references(record.value)
            except RemoteProtocolError:
                continue  # holders checked it; a record that does not decode shows nothing
            for reference in references:
                digest = _digest(reference)
                if digest in known.references or reference.object_id != object_id:
                    continue
                try:
                    verify_reference(reference, now, trust=trust)
                except ReferenceRejected as error:
                    log.debug("ignoring a reference: %s", error)
                    continue
                if len(known.references) >= self.settings.max_per_object and not _evict_dead(known):
                    log.info(
                        "object %s has over %d references; ignoring the others",
                        short_id(object_id),
                        self.settings.max_per_object,
                        extra={"event": "references_over_bound", "object": object_id.hex()},
                    )
                    return
                known.references[digest] = _Known(reference)

    async def _check(self, one: _Known, now: float) -> None:
        shown = None
        if is_bucket_reference(one.reference):
            shown = await self._ask(one.reference, now)
            one.checked_at = now
        assessment = assess(
            one.reference, shown, now, known=one.retention, settle=self.settings.settle
        )
        one.retention = assessment.retention
        one.assessment = assessment

    async def _ask(self, reference: Reference, now: float) -> Shown:
        """The verified entries the bucket's replicas hold about the referenced version."""
        bucket = bucket_id(reference.tenant, reference.bucket_token)
        contacts = list((await self.dht.lookup(bucket)).closest[: self.settings.replicas])
        query = BucketVersionQuery(bucket=bucket, name=reference.name, version=reference.version)
        entries: dict[bytes, VerifiedEntry] = {}
        answered = 0
        trust = self.dht.trust()

        def take(shown: Sequence[BucketEntry]) -> None:
            for entry in shown:
                digest = entry_digest(entry)
                if digest in entries:
                    continue
                try:
                    verified = verify_entry(entry, now, trust=trust)
                except EntryRejected:
                    continue
                if verified.bucket == bucket:
                    entries[digest] = verified

        asked = len(contacts)
        if self.buckets is not None and _among(self.dht.node_id, bucket, contacts):
            if len(contacts) >= self.settings.replicas:
                contacts.pop()  # the farthest: this node is one of the closest instead
            take(self.buckets.version_entries(bucket, reference.name, reference.version))
            answered += 1
            asked = len(contacts) + 1

        async def one(contact: Contact) -> None:
            nonlocal answered
            reply = await self._call(contact, query)
            if reply is not None:
                answered += 1
                take(reply.entries)

        async with trio.open_nursery() as nursery:
            for contact in contacts:
                nursery.start_soon(one, contact)
        return Shown(tuple(entries.values()), answered, asked)

    async def _call(self, contact: Contact, query: BucketVersionQuery) -> BucketVersionReply | None:
        node = self.dht.node
        try:
            reply = await node.call(
                contact.id, contact.address, query, timeout=self.settings.rpc_timeout
            )
        except RPC_FAILURES as error:
            log.debug("bucket version query to %s failed: %s", short_id(contact.id), error)
            return None
        return reply if isinstance(reply, BucketVersionReply) else None

    # -- republishing -------------------------------------------------------------------------

    async def _republish(self, object_id: bytes, known: _Object) -> None:
        """Publish the references not shown dead as our own record, when they changed."""
        keeping = sorted(
            (digest, one.reference)
            for digest, one in known.references.items()
            if one.assessment is None or one.assessment.verdict is not Verdict.DEAD
        )[:MAX_REFERENCES_PER_RECORD]
        digests = frozenset(d for d, _ in keeping)
        key = manifest_key(object_id)
        ours = (int(RecordKind.REFERENCES), key) in self.dht.published
        if digests == known.published and (ours or not keeping):
            return
        known.published = digests
        if not keeping:
            self.dht.published.remove(RecordKind.REFERENCES, key)
            return
        value = encode_references(tuple(r for _, r in keeping))
        try:
            await self.dht.publish_value(RecordKind.REFERENCES, key, value)
        except RPC_FAILURES as error:
            log.debug("could not publish references of %s: %s", short_id(key), error)

    def _forget_stale(self, now: float) -> None:
        stale = [
            object_id
            for object_id, known in self._objects.items()
            if now - known.asked_at > self.settings.forget_after
        ]
        for object_id in stale:
            self.forget(object_id)


def _among(node_id: bytes, key: bytes, contacts: Sequence[Contact]) -> bool:
    """Whether ``node_id`` is closer to ``key`` than the farthest of ``contacts``."""
    target = int.from_bytes(key, "big")
    mine = int.from_bytes(node_id, "big") ^ target
    return not contacts or any(int.from_bytes(c.id, "big") ^ target > mine for c in contacts)


def _digest(reference: Reference) -> bytes:
    return hashlib.sha256(signed_bytes(reference) + reference.signature).digest()


def _evict_dead(known: _Object) -> bool:
    for digest, one in known.references.items():
        if one.assessment is not None and one.assessment.verdict is Verdict.DEAD:
            del known.references[digest]
            return True
    return False


KEEP: Final = 100 * 365 * 86400.0
"""How long a bare ``put`` (no bucket names it) keeps its object: a lease reference the
uploader signs for about a century, so a read cap alone stays as durable as before."""


async def keep(dht: Dht, object_id: bytes, *, now: float, seconds: float = KEEP) -> int:
    """Sign and publish a lease reference keeping ``object_id`` for ``seconds``."""
    reference = sign_reference(dht.node.credentials, object_id, now=now, expires=now + seconds)
    return await publish_reference(dht, reference, now=now)


async def publish_reference(dht: Dht, reference: Reference, *, now: float) -> int:
    """Publish ``reference`` (signed by this client) in our REFERENCES record of its object,
    with the references our earlier record there still lists; return how many peers took it.

    Raises :class:`PutFailed` if none did: the object would then not be known referenced."""
    key = manifest_key(reference.object_id)
    credentials = dht.node.credentials
    mine = credentials.public_key_bytes()
    listed: dict[bytes, Reference] = {_digest(reference): reference}
    sequence = math.floor(now * 1000)
    for record in await dht.find_records(RecordKind.REFERENCES, key):
        if record.publisher_key != mine:
            continue
        sequence = max(sequence, record.sequence + 1)
        try:
            earlier = decode_references(record.value)
        except RemoteProtocolError:
            continue
        for old in earlier:
            lapsed = not is_bucket_reference(old) and old.expires_ms <= now * 1000
            if not lapsed:
                listed.setdefault(_digest(old), old)
    kept = [reference, *[r for d, r in sorted(listed.items()) if r is not reference]]
    value = encode_references(tuple(kept[:MAX_REFERENCES_PER_RECORD]))
    ttl = RULES[RecordKind.REFERENCES].max_ttl
    record = sign_record(
        credentials,
        RecordKind.REFERENCES,
        key,
        value,
        sequence=sequence,
        expires_at=math.floor(now) + ttl,
    )
    copies = await dht.publisher.store_on_closest(record)
    if copies == 0:
        raise PutFailed(
            f"no peer took the reference to object {short_id(key)}: is the mesh reachable?",
            chunk=None,
        )
    return copies
