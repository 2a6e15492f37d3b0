"""The get side of the codec: any k fragments of a chunk in, the chunk's plaintext out.

Strategy: trust nothing but the manifest (itself checked against the object id).  Each fragment
used is hashed and compared with the id the manifest lists for its share, its header must agree
with the manifest, then zfec rebuilds the primary blocks, the padding is cut at the recorded
ciphertext size, and the AEAD authenticates the chunk at its index -- so a wrong key, a
corrupted, swapped, reordered or truncated chunk raises :class:`IntegrityError` and never yields
wrong bytes.  :func:`verified_primaries` (checks + zfec, no key) is shared with repair.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from p2pstore.codec.aead import ChunkCipher
from p2pstore.codec.erasure import Buffer, ErasureCoder
from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.codec.fragments import FragmentHeader, parse_fragment
from p2pstore.codec.manifest import ChunkEntry, Manifest
from p2pstore.errors import IntegrityError, LocalProtocolError, RemoteProtocolError


def chunk_entry(manifest: Manifest, index: int) -> ChunkEntry:
    """The manifest entry of chunk ``index``; :class:`LocalProtocolError` if out of range."""
    if not isinstance(index, int) or not 0 <= index < manifest.chunk_count:
        raise LocalProtocolError(
            f"chunk index {index!r} is out of range: the object has {manifest.chunk_count}"
        )
    return manifest.chunks[index]


def check_fragment_of(
    manifest: Manifest, index: int, share: int, data: Buffer, *, hashed: bool = False
) -> memoryview:
    """Check that ``data`` is share ``share`` of chunk ``index``; return a view of its block.

    ``hashed``: the caller already checked ``data`` against the id this manifest lists for the
    share (a fetch or the store did, see ``p2pstore.net.fragments.fetch_fragment``), so it is not
    hashed twice; the header and size are checked all the same.  Raises :class:`IntegrityError`
    if its hash is not the id the manifest lists, or if its header or block size disagree with
    the manifest; :class:`LocalProtocolError` for an index or share out of range.
    """
    entry = chunk_entry(manifest, index)
    if not isinstance(share, int) or not 0 <= share < manifest.n:
        raise LocalProtocolError(f"share {share!r} is out of range for n={manifest.n}")
    expected = entry.fragment_ids[share]
    actual = expected if hashed else fragment_id(data)
    if actual != expected:
        raise IntegrityError(
            f"fragment {expected.hex()[:16]} (chunk {index}, share {share}) is corrupt: its "
            f"bytes hash to {actual.hex()[:16]}; fetch it from another holder"
        )
    try:
        header, block = parse_fragment(data)
    except RemoteProtocolError as exc:
        raise IntegrityError(f"chunk {index} share {share}: manifest lists a bad fragment") from exc
    if header != FragmentHeader(manifest.k, manifest.n, share, index) or (
        len(block) != entry.block_size
    ):
        raise IntegrityError(
            f"chunk {index} share {share}: the fragment's header or size disagrees with the "
            "manifest (the object was encoded inconsistently)"
        )
    return block


def verified_primaries(
    manifest: Manifest,
    index: int,
    fragments: Mapping[int, Buffer],
    coder: ErasureCoder,
    *,
    hashed: bool = False,
) -> list[Buffer]:
    """The k primary blocks of chunk ``index`` rebuilt from ``fragments`` (share -> bytes).

    Only the k lowest shares given are used and checked (``hashed``: see
    :func:`check_fragment_of`).  Raises :class:`NotEnoughFragments` with fewer than k,
    :class:`IntegrityError` if a used fragment fails its checks.
    """
    if (coder.k, coder.n) != (manifest.k, manifest.n):
        raise LocalProtocolError("the erasure coder does not match the manifest's k and n")
    chosen = sorted(fragments)[: manifest.k]
    blocks = {s: check_fragment_of(manifest, index, s, fragments[s], hashed=hashed) for s in chosen}
    return coder.decode(blocks)


class ObjectDecoder:
    """Decodes the chunks of one object, in any order, given its manifest and key.

    Raises :class:`LocalProtocolError` at construction for a malformed key.
    """

    __slots__ = ("_cipher", "_coder", "manifest")

    def __init__(self, manifest: Manifest, key: bytes) -> None:
        self.manifest = manifest
        self._cipher = ChunkCipher(
            key,
            cipher=manifest.cipher,
            chunk_size=manifest.chunk_size,
            object_size=manifest.plaintext_size,
        )
        self._coder = ErasureCoder(manifest.k, manifest.n)

    def decode_chunk(
        self, index: int, fragments: Mapping[int, Buffer], *, hashed: bool = False
    ) -> bytes:
        """The plaintext of chunk ``index`` from at least k of its fragments (share -> bytes;
        ``hashed``: see :func:`check_fragment_of`).

        Raises :class:`NotEnoughFragments` with fewer than k fragments, :class:`IntegrityError`
        for a corrupt fragment, a wrong key or a chunk that fails authentication.
        """
        entry = chunk_entry(self.manifest, index)
        primaries = verified_primaries(self.manifest, index, fragments, self._coder, hashed=hashed)
        padded = b"".join(primaries)
        if any(padded[entry.ciphertext_size :]):
            raise IntegrityError(f"chunk {index} has non-zero padding: corrupted chunk")
        return self._cipher.open(index, memoryview(padded)[: entry.ciphertext_size])


def decode_object(
    manifest: Manifest, key: bytes, fragments_by_chunk: Iterable[Mapping[int, Buffer]]
) -> Iterator[bytes]:
    """Yield the object's plaintext chunk by chunk from one fragment map per chunk, in order.

    Raises what :meth:`ObjectDecoder.decode_chunk` raises, :class:`IntegrityError` if the maps
    run out before the last chunk (a truncated object), :class:`LocalProtocolError` if there are
    more maps than chunks.
    """
    decoder = ObjectDecoder(manifest, key)
    count = 0
    for index, fragments in enumerate(fragments_by_chunk):
        if index >= manifest.chunk_count:
            raise LocalProtocolError(f"more fragment maps than the {manifest.chunk_count} chunks")
        yield decoder.decode_chunk(index, fragments)
        count = index + 1
    if count != manifest.chunk_count:
        raise IntegrityError(f"object truncated: got {count} of {manifest.chunk_count} chunks")
