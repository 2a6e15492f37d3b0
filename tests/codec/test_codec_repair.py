"""Repair with the verify cap alone: rebuilt fragments equal the lost originals."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.codec import (
    ChunkEntry,
    Manifest,
    VerifyCap,
    decode_manifest,
    encode_object,
    random_key,
    rebuild_fragments,
)
from p2pstore.errors import IntegrityError, LocalProtocolError, NotEnoughFragments

KEY = random_key(b"\x09" * 32)


def _encoded(size, chunk_size, k, n, seed=0):
    data = random.Random(seed).randbytes(size)
    chunks = [data[i : i + chunk_size] for i in range(0, size, chunk_size)] or [b""]
    return encode_object(KEY, size, chunks, k=k, n=n, chunk_size=chunk_size)


@st.composite
def repair_cases(draw):
    n = draw(st.integers(1, 40))
    k = draw(st.integers(1, n))
    size = draw(st.integers(0, 20_000))
    chunk_size = draw(st.integers(max(1, size // 20), max(1, size) + 10))
    return size, chunk_size, k, n


@settings(max_examples=60, deadline=None)
@given(case=repair_cases(), rnd=st.randoms(use_true_random=False))
def test_rebuild_from_any_k_survivors_equals_the_originals(case, rnd):
    size, chunk_size, k, n = case
    obj, encoded = _encoded(size, chunk_size, k, n)
    # A steward knows only the verify cap; it fetches and checks the manifest with it.
    verify = VerifyCap.parse(obj.read_cap.verify_cap().to_string())
    manifest = decode_manifest(obj.manifest_bytes, verify.object_id)
    for chunk in encoded:
        survivors = rnd.sample(range(n), k)
        lost = [s for s in range(n) if s not in survivors]
        rebuilt = rebuild_fragments(
            manifest, chunk.index, {s: chunk.fragments[s] for s in survivors}, lost
        )
        assert sorted(rebuilt) == lost
        for share in lost:
            assert rebuilt[share] == chunk.fragments[share]


def test_corrupt_survivor_is_caught():
    obj, (chunk,) = _encoded(3000, 4000, 3, 6)
    bad = bytearray(chunk.fragments[4])
    bad[-1] ^= 1
    with pytest.raises(IntegrityError, match="chunk 0, share 4"):
        rebuild_fragments(
            obj.manifest, 0, {3: chunk.fragments[3], 4: bytes(bad), 5: chunk.fragments[5]}, [0]
        )


def test_too_few_survivors():
    obj, (chunk,) = _encoded(3000, 4000, 3, 6)
    with pytest.raises(NotEnoughFragments) as info:
        rebuild_fragments(obj.manifest, 0, {1: chunk.fragments[1], 5: chunk.fragments[5]}, [0])
    assert (info.value.needed, info.value.found) == (3, 2)


def test_bad_indices_are_refused():
    obj, (chunk,) = _encoded(100, 100, 2, 3)
    survivors = dict(enumerate(chunk.fragments))
    with pytest.raises(LocalProtocolError):
        rebuild_fragments(obj.manifest, 0, survivors, [3])
    with pytest.raises(LocalProtocolError):
        rebuild_fragments(obj.manifest, 1, survivors, [0])
    with pytest.raises(LocalProtocolError):
        rebuild_fragments(obj.manifest, 0, {7: chunk.fragments[0], 0: chunk.fragments[0]}, [1])
    assert rebuild_fragments(obj.manifest, 0, survivors, []) == {}


def test_rebuilt_fragment_is_checked_against_the_manifest():
    # A manifest whose listed id for share 2 is not what the coding gives: the survivors are
    # fine, but the rebuilt share cannot match, and repair must refuse to hand it out.
    obj, (chunk,) = _encoded(500, 500, 2, 4)
    m = obj.manifest
    entry = m.chunks[0]
    ids = list(entry.fragment_ids)
    ids[2] = bytes(32)
    forged = Manifest(
        m.plaintext_size,
        m.chunk_size,
        m.cipher,
        m.rule,
        m.k,
        m.n,
        (ChunkEntry(entry.ciphertext_size, entry.block_size, tuple(ids)),),
    )
    survivors = {0: chunk.fragments[0], 1: chunk.fragments[1]}
    assert rebuild_fragments(forged, 0, survivors, [3]) == {3: chunk.fragments[3]}
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        rebuild_fragments(forged, 0, survivors, [2, 3])
