"""How S3's buckets and object versions are written in the mesh's bucket index, and read back.

Strategy: the gateway speaks the same index as ``p2pstore bucket``/``cp``/``ls``
(:mod:`p2pstore.net.bucket_client`), so a bucket either side makes is the other's.  A bucket is
a name of the tenant's root bucket whose entry metadata carries its settings; the CLI's keys
(``rule``, ``versioning`` on/off, ``retention-days``) keep their meaning and S3 adds two:
``versioning`` may also be ``suspended``, and ``object-lock`` = ``on``.  An object version is a
PUT entry: the name, the read cap (of the object, or of its segment list for a multipart
object, :mod:`p2pstore.codec.segments`), the size, and in its sealed metadata the ETag, the
Content-Type and the user metadata (``x-amz-meta-*``).  A version written while versioning is
off or suspended carries ``null`` = ``1``: it is S3's "null" version, replaced by the next one.

Version ids are the index's own (the hash of what the entry says, in hex), so the id a client
is given is the one every replica knows.  An object the CLI wrote has no recorded MD5: its ETag
is derived from its version id in S3's multipart form (``"...-1"``), which no client mistakes
for an MD5 to compare.  Pure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from p2pstore.codec.bucket_keys import EntryPayload
from p2pstore.codec.segments import METADATA_KEY as SEGMENTS
from p2pstore.core.bucket_index import VersionView
from p2pstore.gateway.backend import NULL_VERSION, Blob, BucketInfo, ObjectInfo, ObjectMeta

DAY = 86_400.0
LIST_PREFIX = "segments:"
"""A blob whose ref starts so is a segment list's read cap (the gateway reads its parts)."""
META_PREFIX = "x-amz-meta-"
NULL = "null"
_VERSIONING = {"": "off", "Enabled": "on", "Suspended": "suspended"}
_FROM_VERSIONING = {value: key for key, value in _VERSIONING.items()}


@dataclass(frozen=True, slots=True)
class BucketSettings:
    """A bucket's settings as the root entry says them (created in seconds)."""

    info: BucketInfo
    rule: str

    def metadata(self) -> tuple[tuple[str, str], ...]:
        days = 0 if self.info.default_retention is None else self.info.default_retention / DAY
        pairs = [
            ("rule", self.rule),
            ("versioning", _VERSIONING[self.info.versioning]),
            ("retention-days", str(int(days))),
            ("created", str(int(self.info.created * 1000))),
        ]
        if self.info.object_lock:
            pairs.append(("object-lock", "on"))
        return tuple(pairs)


def bucket_settings(tenant: str, payload: EntryPayload) -> BucketSettings:
    """A root entry's payload as S3 settings (what the CLI wrote reads too)."""
    meta = dict(payload.metadata)
    try:
        days = max(0, int(meta.get("retention-days", "0")))
        created = int(meta.get("created", payload.mtime)) / 1000
    except ValueError:
        days, created = 0, payload.mtime / 1000
    info = BucketInfo(
        name=payload.name,
        tenant=tenant,
        created=created,
        versioning=_FROM_VERSIONING.get(meta.get("versioning", "off"), ""),
        object_lock=meta.get("object-lock") == "on" or days > 0,
        default_retention=days * DAY if days else None,
    )
    return BucketSettings(info, meta.get("rule", ""))


def object_metadata(meta: ObjectMeta, *, segments: int, null: bool) -> tuple[tuple[str, str], ...]:
    """What a PUT entry's sealed metadata says besides the name, cap and size."""
    pairs = [("etag", meta.etag), ("content-type", meta.content_type)]
    pairs += [(META_PREFIX + k, v) for k, v in meta.metadata]
    if segments > 1:
        pairs.append((SEGMENTS, str(segments)))
    if null:
        pairs.append((NULL, "1"))
    return tuple(pairs)


def is_null(payload: EntryPayload) -> bool:
    return any(k == NULL for k, _ in payload.metadata)


def object_info(view: VersionView, payload: EntryPayload, *, latest: bool) -> ObjectInfo:
    """One version of an object (or a delete marker) as the S3 front shows it."""
    meta = dict(payload.metadata)
    etag = meta.get("etag") or f'"{hashlib.md5(view.version).hexdigest()}-1"'  # noqa: S324
    user = tuple(
        (k.removeprefix(META_PREFIX), v) for k, v in payload.metadata if k.startswith(META_PREFIX)
    )
    ref = LIST_PREFIX + payload.cap if SEGMENTS in meta else payload.cap
    return ObjectInfo(
        key=payload.name,
        version_id=NULL_VERSION if NULL in meta else view.version.hex(),
        size=payload.size,
        meta=ObjectMeta(etag, meta.get("content-type") or "binary/octet-stream", user),
        modified=view.timestamp / 1000,
        segments=() if view.is_marker else (Blob(ref, payload.size),),
        latest=latest,
        delete_marker=view.is_marker,
        retain_until=float(view.retain_until) if view.retain_until else None,
        legal_hold=view.legal_hold,
    )
