"""k-of-n erasure coding of one chunk's ciphertext with zfec's low-level Reed-Solomon coder.

Strategy.  The ciphertext is zero-padded to ``k * block_size`` and cut into ``k`` equal primary
blocks; zfec makes ``n`` blocks of which any ``k`` rebuild the primaries (blocks ``0..k-1`` *are*
the primaries, so decoding from them is a copy).  The padding length is implied by the
ciphertext length the manifest records.  ``easyfec`` would do the padding for us but appends its
own pad bookkeeping to the data; doing it here keeps block sizes exactly ``ceil(len / k)``.

zfec trusts its caller: it loops forever on a repeated block number and silently returns garbage
for a block number >= n.  Every call goes through the checks below, never straight to zfec.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import zfec

from p2pstore.errors import IntegrityError, LocalProtocolError, NotEnoughFragments

MAX_SHARES = 256
"""zfec works in GF(2^8): 1 <= k <= n <= 256."""

Buffer = bytes | bytearray | memoryview


def check_coding(k: int, n: int) -> None:
    """Raise :class:`LocalProtocolError` unless 1 <= k <= n <= 256 (ints)."""
    for name, value in (("k", k), ("n", n)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise LocalProtocolError(f"coding parameter {name} must be an int, got {value!r}")
    if not 1 <= k <= n <= MAX_SHARES:
        raise LocalProtocolError(
            f"coding parameters k={k}, n={n} are invalid: need 1 <= k <= n <= {MAX_SHARES} "
            "(any k of the n fragments rebuild a chunk; k = 1 is replication)"
        )


def block_size_for(ciphertext_length: int, k: int) -> int:
    """The size of each of the n blocks coding ``ciphertext_length`` bytes with k primaries."""
    return -(-ciphertext_length // k)


class ErasureCoder:
    """Encodes and decodes blocks for one (k, n).  Build once per object; calls are
    independent (zfec keeps no per-call state)."""

    __slots__ = ("_decoder", "_encoder", "k", "n")

    def __init__(self, k: int, n: int) -> None:
        """Raises :class:`LocalProtocolError` for invalid parameters."""
        check_coding(k, n)
        self.k = k
        self.n = n
        self._encoder = zfec.Encoder(k, n)
        self._decoder = zfec.Decoder(k, n)

    def split(self, ciphertext: bytes) -> tuple[list[Buffer], int]:
        """Pad ``ciphertext`` and cut it into k primary blocks; returns (blocks, block size)."""
        size = block_size_for(len(ciphertext), self.k)
        pad = size * self.k - len(ciphertext)
        padded = ciphertext + bytes(pad) if pad else ciphertext
        view = memoryview(padded)
        return [view[i * size : (i + 1) * size] for i in range(self.k)], size

    def encode(
        self, primaries: Sequence[Buffer], shares: Iterable[int] | None = None
    ) -> list[Buffer]:
        """The requested share numbers (all n in order by default) of the k ``primaries``."""
        if len(primaries) != self.k:
            raise LocalProtocolError(f"need k={self.k} primary blocks, got {len(primaries)}")
        if shares is None:
            return list(self._encoder.encode(tuple(primaries)))
        wanted = tuple(shares)
        for share in wanted:
            self._check_share(share)
        if not wanted:
            return []
        return list(self._encoder.encode(tuple(primaries), wanted))

    def decode(self, blocks: Mapping[int, Buffer]) -> list[Buffer]:
        """Rebuild the k primary blocks from any k of ``blocks`` (share number -> block).

        Uses the k lowest share numbers (primaries are cheapest).  Raises
        :class:`NotEnoughFragments` with fewer than k blocks, :class:`LocalProtocolError` for a
        share number outside 0..n-1, :class:`IntegrityError` if the chosen blocks differ in size.
        """
        for share in blocks:
            self._check_share(share)
        if len(blocks) < self.k:
            raise NotEnoughFragments(
                f"need {self.k} distinct fragments of the chunk to decode it, have {len(blocks)}",
                needed=self.k,
                found=len(blocks),
            )
        chosen = sorted(blocks)[: self.k]
        sizes = {len(blocks[share]) for share in chosen}
        if len(sizes) != 1:
            raise IntegrityError(f"blocks of one chunk differ in size: {sorted(sizes)}")
        if chosen == list(range(self.k)):
            return [blocks[share] for share in chosen]
        return list(self._decoder.decode(tuple(blocks[s] for s in chosen), tuple(chosen)))

    def _check_share(self, share: int) -> None:
        if not isinstance(share, int) or isinstance(share, bool) or not 0 <= share < self.n:
            raise LocalProtocolError(
                f"share number {share!r} is out of range for {self.k}-of-{self.n} coding"
            )
