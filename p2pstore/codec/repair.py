"""Repair: rebuild lost fragments of a chunk from any k survivors, without the read key.

Why this works without the key: coding runs on ciphertext ("Encrypt, then code"), so a steward
holding only the verify cap -- hence the manifest -- decodes the k surviving blocks back to the
primary blocks of the ciphertext, re-encodes the missing share numbers, and wraps them in their
headers.  Each rebuilt fragment is hashed and must equal the id the manifest lists for it, so a
repair can only ever recreate the original bytes; it never needs to trust the survivors' holders
(their fragments are checked too) nor see plaintext.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from p2pstore.codec.decoder import chunk_entry, verified_primaries
from p2pstore.codec.erasure import Buffer, ErasureCoder
from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.codec.fragments import FragmentHeader, make_fragment
from p2pstore.codec.manifest import Manifest
from p2pstore.errors import IntegrityError, LocalProtocolError


def rebuild_fragments(
    manifest: Manifest,
    index: int,
    survivors: Mapping[int, Buffer],
    wanted: Iterable[int],
    *,
    hashed: bool = False,
) -> dict[int, bytes]:
    """Rebuild the fragments ``wanted`` (share numbers) of chunk ``index`` from ``survivors``
    (share -> fragment bytes; at least k of them; ``hashed``: already checked against the
    manifest's ids, see :func:`~p2pstore.codec.decoder.check_fragment_of`).

    Returns share -> fragment bytes, each already checked against the manifest's id.  Raises
    :class:`NotEnoughFragments` with fewer than k survivors, :class:`IntegrityError` if a
    survivor used is corrupt or a rebuilt fragment does not match its id, and
    :class:`LocalProtocolError` for an index or share number out of range.
    """
    entry = chunk_entry(manifest, index)
    shares = sorted(set(wanted))
    for share in shares:
        if not isinstance(share, int) or not 0 <= share < manifest.n:
            raise LocalProtocolError(f"share {share!r} is out of range for n={manifest.n}")
    if not shares:
        return {}
    coder = ErasureCoder(manifest.k, manifest.n)
    primaries = verified_primaries(manifest, index, survivors, coder, hashed=hashed)
    blocks = coder.encode(primaries, shares)
    rebuilt: dict[int, bytes] = {}
    for share, block in zip(shares, blocks, strict=True):
        fragment = make_fragment(FragmentHeader(manifest.k, manifest.n, share, index), block)
        if fragment_id(fragment) != entry.fragment_ids[share]:
            raise IntegrityError(
                f"rebuilt share {share} of chunk {index} does not match the manifest's id "
                f"{entry.fragment_ids[share].hex()[:16]}: the manifest and fragments disagree"
            )
        rebuilt[share] = fragment
    return rebuilt
