"""The put side of the codec: plaintext chunks in, fragments and a manifest out.

Strategy: encrypt, then code ("Encrypt, then code" in DESIGN.md).  Each chunk is sealed with
the object's chunk cipher, padded and cut into k blocks, coded into n blocks, and each block
becomes a fragment (header + block) whose id is its hash.  :class:`ObjectEncoder` takes one chunk
at a time and keeps only the manifest entries, so memory is one chunk and its n fragments,
whatever the object's size.  The object's size must be known up front: it is bound into every
chunk's associated data and decides which chunk is last (a file's size comes from ``fstat``; a
convergent key's first pass counts it).  Pure and synchronous: no I/O, no clock, no randomness --
the key comes from the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from p2pstore.codec.aead import DEFAULT_CIPHER, ChunkCipher
from p2pstore.codec.capability import ReadCap
from p2pstore.codec.chunking import DEFAULT_CHUNK_SIZE, chunk_count
from p2pstore.codec.erasure import ErasureCoder
from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.codec.fragments import FragmentHeader, make_fragment
from p2pstore.codec.manifest import (
    ChunkEntry,
    Manifest,
    check_manifest_fits,
    check_rule_name,
    object_id_of,
)
from p2pstore.errors import LocalProtocolError

DEFAULT_K = 4
DEFAULT_N = 8
DEFAULT_RULE = "default"


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    """The n fragments of chunk ``index`` in share order, and their ids (same order)."""

    index: int
    fragments: tuple[bytes, ...]
    fragment_ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.fragments) != len(self.fragment_ids):
            raise LocalProtocolError("an encoded chunk needs one id per fragment")


@dataclass(frozen=True, slots=True)
class EncodedObject:
    """What a finished put produced: the manifest, its bytes, and the read cap (object id +
    key).  ``repr`` hides the key (see :class:`ReadCap`)."""

    manifest: Manifest
    manifest_bytes: bytes = field(repr=False)
    read_cap: ReadCap

    @property
    def object_id(self) -> bytes:
        """SHA-256 of ``manifest_bytes``."""
        return self.read_cap.object_id


class ObjectEncoder:
    """Encodes one object, chunk by chunk, in order (one call at a time: it counts chunks).

    ``for chunk in iter_chunks(f, chunk_size): store(enc.encode_chunk(chunk))`` then
    ``enc.finish()``.  Raises :class:`LocalProtocolError` for bad parameters (k, n, chunk size,
    cipher, rule name, key) and when the object is too large for a manifest -- at construction,
    before any work.
    """

    __slots__ = ("_cipher", "_coder", "_entries", "_key", "_layout", "_plaintext_size")

    def __init__(
        self,
        key: bytes,
        plaintext_size: int,
        *,
        k: int = DEFAULT_K,
        n: int = DEFAULT_N,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        cipher: str = DEFAULT_CIPHER,
        rule: str = DEFAULT_RULE,
    ) -> None:
        self._cipher = ChunkCipher(
            key, cipher=cipher, chunk_size=chunk_size, object_size=plaintext_size
        )
        self._coder = ErasureCoder(k, n)
        check_rule_name(rule)
        check_manifest_fits(plaintext_size, chunk_size, n)
        self._key = key
        self._plaintext_size = plaintext_size
        self._layout = (chunk_size, cipher, rule)
        self._entries: list[ChunkEntry] = []

    @property
    def chunk_count(self) -> int:
        """How many chunks :meth:`encode_chunk` must be given."""
        return chunk_count(self._plaintext_size, self._layout[0])

    @property
    def next_index(self) -> int:
        """The index the next call to :meth:`encode_chunk` encodes."""
        return len(self._entries)

    def encode_chunk(self, plaintext: bytes) -> EncodedChunk:
        """Encrypt and code the next chunk.  Raises :class:`LocalProtocolError` if every chunk
        was already given or ``plaintext`` is not exactly the next chunk's length."""
        index = len(self._entries)
        if index >= self.chunk_count:
            raise LocalProtocolError(f"the object has only {self.chunk_count} chunks")
        ciphertext = self._cipher.seal(index, plaintext)
        primaries, block_size = self._coder.split(ciphertext)
        blocks = self._coder.encode(primaries)
        coder = self._coder
        fragments = tuple(
            make_fragment(FragmentHeader(coder.k, coder.n, share, index), block)
            for share, block in enumerate(blocks)
        )
        ids = tuple(fragment_id(fragment) for fragment in fragments)
        self._entries.append(ChunkEntry(len(ciphertext), block_size, ids))
        return EncodedChunk(index, fragments, ids)

    def finish(self) -> EncodedObject:
        """The manifest and read cap, once every chunk was encoded.  Raises
        :class:`LocalProtocolError` if chunks are missing."""
        if len(self._entries) != self.chunk_count:
            raise LocalProtocolError(
                f"finish() after {len(self._entries)} of {self.chunk_count} chunks: "
                "encode every chunk first"
            )
        chunk_size, cipher, rule = self._layout
        manifest = Manifest(
            plaintext_size=self._plaintext_size,
            chunk_size=chunk_size,
            cipher=cipher,
            rule=rule,
            k=self._coder.k,
            n=self._coder.n,
            chunks=tuple(self._entries),
        )
        data = manifest.encode()
        return EncodedObject(manifest, data, ReadCap(object_id_of(data), self._key))


def encode_object(
    key: bytes,
    plaintext_size: int,
    chunks: Iterable[bytes],
    *,
    k: int = DEFAULT_K,
    n: int = DEFAULT_N,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    cipher: str = DEFAULT_CIPHER,
    rule: str = DEFAULT_RULE,
) -> tuple[EncodedObject, list[EncodedChunk]]:
    """Encode a whole object held in memory (small objects, tests): all fragments at once.

    Raises what :class:`ObjectEncoder` raises.
    """
    encoder = ObjectEncoder(
        key, plaintext_size, k=k, n=n, chunk_size=chunk_size, cipher=cipher, rule=rule
    )
    encoded = [encoder.encode_chunk(chunk) for chunk in chunks]
    return encoder.finish(), encoded
