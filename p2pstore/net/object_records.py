"""An object's records in the DHT: its manifest and the placement records of its holders.

A put publishes both only once every fragment is durable and receipted (so a capability is
never issued for an object the mesh cannot find); a get, a stat or a steward finds the manifest,
checks it against the object id, and merges every valid receipt of every placement record.
"""

from __future__ import annotations

import logging

from p2pstore.codec import Manifest, decode_manifest
from p2pstore.core.holders import Holdings, Placement
from p2pstore.core.records import RULES, RecordKind, manifest_key, sign_record
from p2pstore.errors import IntegrityError, ObjectNotFound, PutFailed, RemoteProtocolError
from p2pstore.net.dht import Dht
from p2pstore.net.placements import publish_holdings, read_holdings

log = logging.getLogger("p2pstore.client")


async def publish_object(
    dht: Dht, object_id: bytes, manifest_bytes: bytes, holdings: Holdings, min_copies: int
) -> int:
    """Publish an object's manifest record and our placement record (the receipts the holders
    just signed); returns how many peers took the manifest.  Raises :class:`PutFailed` if
    too few did."""
    key = manifest_key(object_id)
    now = int(dht.wall_clock())
    manifest = sign_record(
        dht.node.credentials,
        RecordKind.MANIFEST,
        key,
        manifest_bytes,
        sequence=now,
        expires_at=now + RULES[RecordKind.MANIFEST].max_ttl,
    )
    wanted = max(1, min(min_copies, len(dht.table)))
    copies = [await dht.publish(manifest), await publish_holdings(dht, holdings)]
    if min(copies) < wanted:
        raise PutFailed(
            f"the object's records were stored on {min(copies)} peers, fewer than the "
            f"{wanted} required: every fragment is stored, but no capability is issued "
            "for an object the mesh could not find; try again",
            chunk=None,
        )
    return copies[0]


async def find_manifest(dht: Dht, object_id: bytes) -> Manifest:
    """The object's manifest, checked against its id.  Raises :class:`ObjectNotFound`."""
    records = await dht.find_records(RecordKind.MANIFEST, manifest_key(object_id))
    for record in records:
        try:
            return decode_manifest(record.value, object_id)
        except (IntegrityError, RemoteProtocolError) as exc:
            log.warning("ignoring a manifest record that does not match: %s", exc)
    raise ObjectNotFound(
        f"no manifest for object {object_id.hex()[:16]} was found in the mesh "
        f"({len(records)} candidate records): check the capability, or whether the mesh "
        "you are connected to is the one it was stored in"
    )


async def find_holdings(dht: Dht, object_id: bytes, manifest: Manifest) -> Holdings:
    """Every receipt of every placement record found for the object, checked and merged.
    Raises :class:`ObjectNotFound` if there is no placement record at all."""
    holdings = Holdings(object_id, [c.fragment_ids for c in manifest.chunks])
    if not await read_holdings(dht, holdings):
        raise ObjectNotFound(
            f"object {object_id.hex()[:16]} has a manifest but no placement record: "
            "its holders are unknown"
        )
    return holdings


async def find_placement(dht: Dht, object_id: bytes, manifest: Manifest) -> Placement:
    """Where the object's fragments are now: the union of every valid receipt found (see
    :func:`find_holdings`)."""
    holdings = await find_holdings(dht, object_id, manifest)
    return holdings.view(dht.wall_clock(), dht.trust())
