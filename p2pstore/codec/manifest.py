"""Manifests: the public description of an object; its hash is the object id.

Strategy.  A manifest says how to find and check every fragment -- sizes, cipher, coding rule,
and the n fragment ids of each chunk in share order -- and nothing secret: no key and no hash of
the plaintext (a convergent-key object must not reveal which content it holds).  Stewards keep
and serve manifests; anyone holding the object id can check one, and the verify cap is enough to
repair the object.

Encoding: one msgpack array in a fixed order, version first::

    [version, plaintext size, chunk size, cipher, rule, k, n,
     [[ciphertext size, block size, [fragment id x n]] x chunks]]

msgpack packs every value in its shortest form, so the encoding is canonical; decoding insists on
it (re-encoding must give the same bytes), so one manifest has exactly one object id.

Size: about ``n * 34 + 12`` bytes per chunk.  With 4-of-8 and 4 MiB chunks a 2 GiB object's
manifest is ~145 KB and a 100 GiB object's ~7.3 MB.  Manifests are capped at
``MAX_MANIFEST_BYTES`` (8 MiB): that caps 4-of-8 objects in 4 MiB chunks near 115 GiB;
:func:`max_object_size` gives the limit for any layout, and larger objects need larger chunks.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import msgpack

from p2pstore.codec.aead import check_cipher, ciphertext_length
from p2pstore.codec.chunking import (
    MAX_CHUNK_SIZE,
    MAX_OBJECT_SIZE,
    check_chunk_size,
    check_object_size,
    chunk_count,
    chunk_length,
)
from p2pstore.codec.erasure import block_size_for, check_coding
from p2pstore.codec.fragment_ids import FRAGMENT_ID_BYTES
from p2pstore.errors import IntegrityError, LocalProtocolError, RemoteProtocolError

MANIFEST_VERSION = 2
"""2: fragment ids are Merkle roots (see :mod:`p2pstore.codec.fragment_ids`); 1: SHA-256."""
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
OBJECT_ID_BYTES = 32
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIELDS = 8
_HEADER_BOUND = 160
"""Upper bound on the encoded bytes before the chunk list (ints, cipher and rule names)."""


def check_rule_name(rule: str) -> None:
    """Raise :class:`LocalProtocolError` unless ``rule`` is 1-64 of ``A-Za-z0-9._-``."""
    if not isinstance(rule, str) or not _RULE_NAME.fullmatch(rule):
        raise LocalProtocolError(
            f"coding rule name {rule!r} is invalid: use 1-64 characters from A-Z a-z 0-9 . _ -"
        )


@dataclass(frozen=True, slots=True)
class ChunkEntry:
    """One chunk in a manifest: its ciphertext size, block size and fragment ids by share."""

    ciphertext_size: int
    block_size: int
    fragment_ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        for name in ("ciphertext_size", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LocalProtocolError(f"chunk {name} must be a positive int, got {value!r}")
        if not isinstance(self.fragment_ids, tuple):
            raise LocalProtocolError("chunk fragment_ids must be a tuple of ids")
        for fid in self.fragment_ids:
            if not isinstance(fid, bytes) or len(fid) != FRAGMENT_ID_BYTES:
                raise LocalProtocolError(f"a fragment id must be {FRAGMENT_ID_BYTES} bytes")
        if len(set(self.fragment_ids)) != len(self.fragment_ids):
            raise LocalProtocolError("a chunk lists the same fragment id twice")


@dataclass(frozen=True, slots=True)
class Manifest:
    """The public description of an object.  Validated on construction: every chunk entry must
    match the layout implied by the sizes, cipher and k, n (:class:`LocalProtocolError`)."""

    plaintext_size: int
    chunk_size: int
    cipher: str
    rule: str
    k: int
    n: int
    chunks: tuple[ChunkEntry, ...] = field(repr=False)
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        if self.version != MANIFEST_VERSION or isinstance(self.version, bool):
            raise LocalProtocolError(f"manifest version {self.version!r} is not supported")
        check_object_size(self.plaintext_size)
        check_chunk_size(self.chunk_size)
        check_cipher(self.cipher)
        check_rule_name(self.rule)
        check_coding(self.k, self.n)
        expected = chunk_count(self.plaintext_size, self.chunk_size)
        if not isinstance(self.chunks, tuple) or len(self.chunks) != expected:
            raise LocalProtocolError(
                f"an object of {self.plaintext_size} bytes in chunks of {self.chunk_size} has "
                f"{expected} chunks, the manifest lists "
                f"{len(self.chunks) if isinstance(self.chunks, tuple) else self.chunks!r}"
            )
        for index, entry in enumerate(self.chunks):
            if not isinstance(entry, ChunkEntry):
                raise LocalProtocolError(f"chunk {index} is not a ChunkEntry")
            size = ciphertext_length(chunk_length(self.plaintext_size, self.chunk_size, index))
            block = block_size_for(size, self.k)
            if entry.ciphertext_size != size or entry.block_size != block:
                raise LocalProtocolError(
                    f"chunk {index} lists ciphertext {entry.ciphertext_size} / block "
                    f"{entry.block_size} bytes, the layout implies {size} / {block}"
                )
            if len(entry.fragment_ids) != self.n:
                raise LocalProtocolError(
                    f"chunk {index} lists {len(entry.fragment_ids)} fragment ids, n={self.n}"
                )

    @property
    def chunk_count(self) -> int:
        """How many chunks the object has."""
        return len(self.chunks)

    def encode(self) -> bytes:
        """The canonical bytes of this manifest.  Raises :class:`LocalProtocolError` if they
        exceed ``MAX_MANIFEST_BYTES`` (use a larger chunk size)."""
        data: bytes = msgpack.packb(
            [
                self.version,
                self.plaintext_size,
                self.chunk_size,
                self.cipher,
                self.rule,
                self.k,
                self.n,
                [[c.ciphertext_size, c.block_size, list(c.fragment_ids)] for c in self.chunks],
            ],
            use_bin_type=True,
        )
        if len(data) > MAX_MANIFEST_BYTES:
            raise LocalProtocolError(_too_large(len(data), self.chunk_size, self.n))
        return data

    def object_id(self) -> bytes:
        """The object id: SHA-256 of :meth:`encode` (computed on each call)."""
        return object_id_of(self.encode())


def object_id_of(manifest_bytes: bytes) -> bytes:
    """The object id of encoded manifest bytes."""
    return hashlib.sha256(manifest_bytes).digest()


def manifest_size_bound(plaintext_size: int, chunk_size: int, n: int) -> int:
    """An upper bound on the encoded manifest size of an object with this layout."""
    ids_header = 1 if n < 16 else 3
    per_chunk = 1 + 5 + 5 + ids_header + n * (2 + FRAGMENT_ID_BYTES)
    return _HEADER_BOUND + chunk_count(plaintext_size, chunk_size) * per_chunk


def max_object_size(chunk_size: int, n: int) -> int:
    """The largest object whose manifest fits ``MAX_MANIFEST_BYTES`` with this layout."""
    per_chunk = manifest_size_bound(chunk_size, chunk_size, n) - _HEADER_BOUND
    return min(MAX_OBJECT_SIZE, (MAX_MANIFEST_BYTES - _HEADER_BOUND) // per_chunk * chunk_size)


def check_manifest_fits(plaintext_size: int, chunk_size: int, n: int) -> None:
    """Raise :class:`LocalProtocolError` if the object's manifest could exceed the cap, before
    any work is done."""
    bound = manifest_size_bound(plaintext_size, chunk_size, n)
    if bound > MAX_MANIFEST_BYTES:
        raise LocalProtocolError(_too_large(bound, chunk_size, n))


def _too_large(size: int, chunk_size: int, n: int) -> str:
    limit = max_object_size(chunk_size, n)
    return (
        f"the manifest would be {size} bytes, over the {MAX_MANIFEST_BYTES}-byte cap: with "
        f"{chunk_size}-byte chunks and n={n} objects are limited to {limit} bytes "
        f"({limit / 2**30:.1f} GiB); use a larger chunk size (up to {MAX_CHUNK_SIZE})"
    )


def decode_manifest(data: bytes, expected_object_id: bytes) -> Manifest:
    """Check ``data`` against ``expected_object_id``, then parse and validate it.

    Raises :class:`RemoteProtocolError` if ``data`` is over the size cap, :class:`IntegrityError`
    if it does not hash to the object id, and :class:`RemoteProtocolError` if it hashes right but
    is malformed, non-canonical or inconsistent.
    """
    if not isinstance(expected_object_id, bytes) or len(expected_object_id) != OBJECT_ID_BYTES:
        raise LocalProtocolError(f"an object id is {OBJECT_ID_BYTES} bytes")
    if len(data) > MAX_MANIFEST_BYTES:
        raise RemoteProtocolError(
            f"manifest of {len(data)} bytes is over the {MAX_MANIFEST_BYTES}-byte cap"
        )
    actual = object_id_of(data)
    if actual != expected_object_id:
        raise IntegrityError(
            f"manifest does not match object {expected_object_id.hex()[:16]}: it hashes to "
            f"{actual.hex()[:16]}; fetch it from another steward"
        )
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"manifest is not valid msgpack: {exc}") from exc
    manifest = _manifest_from_fields(fields)
    if manifest.encode() != data:
        raise RemoteProtocolError("manifest is not in canonical encoding")
    return manifest


def _manifest_from_fields(fields: object) -> Manifest:
    if not isinstance(fields, list) or len(fields) != _FIELDS:
        raise RemoteProtocolError(f"manifest must be a msgpack array of {_FIELDS} fields")
    version, size, chunk_size, cipher, rule, k, n, chunks = fields
    if version == 1 and type(version) is int:
        raise RemoteProtocolError(
            f"manifest version 1 was written by an older p2pstore (fragment ids were SHA-256 "
            f"hashes; this release reads version {MANIFEST_VERSION}, Merkle roots): get the "
            f"object with the release that put it, and put it again with this one"
        )
    if version != MANIFEST_VERSION or type(version) is not int:
        raise RemoteProtocolError(
            f"manifest version {version!r} is not supported (this code reads {MANIFEST_VERSION})"
        )
    for name, value, kind in (
        ("plaintext size", size, int),
        ("chunk size", chunk_size, int),
        ("cipher", cipher, str),
        ("rule", rule, str),
        ("k", k, int),
        ("n", n, int),
        ("chunk list", chunks, list),
    ):
        if type(value) is not kind:
            raise RemoteProtocolError(f"manifest {name} must be {kind.__name__}, got {value!r:.40}")
    entries = []
    for index, chunk in enumerate(chunks):
        if (
            type(chunk) is not list
            or len(chunk) != 3
            or type(chunk[0]) is not int
            or type(chunk[1]) is not int
            or type(chunk[2]) is not list
            or not all(type(fid) is bytes for fid in chunk[2])
        ):
            raise RemoteProtocolError(
                f"manifest chunk {index} must be [int, int, [bytes...]], got {chunk!r:.60}"
            )
        entries.append((chunk[0], chunk[1], tuple(chunk[2])))
    try:
        return Manifest(
            plaintext_size=size,
            chunk_size=chunk_size,
            cipher=cipher,
            rule=rule,
            k=k,
            n=n,
            chunks=tuple(ChunkEntry(c, b, ids) for c, b, ids in entries),
            version=version,
        )
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"manifest is inconsistent: {exc}") from exc
