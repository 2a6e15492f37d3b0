"""Fragment ids as Merkle roots: the tree's shape, streaming, and audit proofs (property tests)."""

import hashlib
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from p2pstore.codec.fragment_ids import (
    LEAF_SIZE,
    SCHEME,
    AuditProof,
    MerkleScheme,
    audit_proof,
    audit_proof_error,
    check_fragment,
    fragment_hasher,
    fragment_id,
    leaf_count,
    verify_audit_proof,
)
from p2pstore.errors import IntegrityError, LocalProtocolError

TINY = MerkleScheme(4, hashlib.sha256)
"""4-byte leaves: deep, lopsided trees from a few hundred bytes, so shapes are cheap to cover."""


def reference_id(data: bytes, leaf_size: int) -> bytes:
    """The id as the module docstring defines it, written the recursive way (RFC 6962)."""

    def sha(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    def mth(leaves: list[bytes]) -> bytes:
        if len(leaves) == 1:
            return sha(b"\x00" + leaves[0])
        split = 1
        while split * 2 < len(leaves):
            split *= 2
        return sha(b"\x01" + mth(leaves[:split]) + mth(leaves[split:]))

    leaves = [data[i : i + leaf_size] for i in range(0, len(data), leaf_size)] or [b""]
    header = b"\x02" + leaf_size.to_bytes(4, "big") + len(data).to_bytes(8, "big")
    return sha(header + mth(leaves))


def edge_sizes(leaf: int) -> list[int]:
    return [0, 1, leaf - 1, leaf, leaf + 1, 2 * leaf, 3 * leaf, 3 * leaf + 1, 5 * leaf - 1]


def sizes(leaf: int, most_leaves: int) -> st.SearchStrategy[int]:
    return st.sampled_from(edge_sizes(leaf)) | st.integers(0, most_leaves * leaf)


def random_bytes(seed: int, size: int) -> bytes:
    """Random bytes (distinct leaves: identical leaves are interchangeable in any tree)."""
    return random.Random(seed).randbytes(size)


def test_known_answers():
    """Pinned: changing any of these changes every fragment id, which needs a new store format."""
    assert fragment_id(b"").hex().startswith("0eb792540b6eea1a")
    assert fragment_id(b"p2pstore").hex().startswith("814b247486cfcee8")
    assert fragment_id(bytes(40000)).hex().startswith("52b89fc2770c008b")
    assert LEAF_SIZE == 16 * 1024


@settings(max_examples=60, deadline=None)
@given(size=sizes(4, 300), seed=st.integers(0, 1000))
def test_the_id_is_the_reference_tree(size, seed):
    data = random_bytes(seed, size)
    assert TINY.fragment_id(data) == reference_id(data, 4)


@pytest.mark.parametrize("size", edge_sizes(LEAF_SIZE))
def test_the_real_scheme_is_the_reference_tree(size):
    data = random_bytes(size, size)
    assert fragment_id(data) == reference_id(data, LEAF_SIZE)


@settings(max_examples=80, deadline=None)
@given(
    size=sizes(4, 200),
    seed=st.integers(0, 1000),
    pieces=st.lists(st.integers(0, 50), max_size=30),
)
def test_streaming_in_any_pieces_gives_the_same_id(size, seed, pieces):
    data = random_bytes(seed, size)
    hasher = TINY.stream()
    position = 0
    for piece in pieces:
        hasher.update(data[position : position + piece])
        position = min(size, position + piece)
        assert hasher.digest() == TINY.fragment_id(data[:position])  # digest does not consume
    hasher.update(memoryview(data)[position:])
    assert hasher.digest() == TINY.fragment_id(data)


def test_the_real_streaming_hasher_across_leaf_boundaries():
    data = random_bytes(1, 3 * LEAF_SIZE + 7)
    hasher = fragment_hasher()
    for start in range(0, len(data), 10_000):
        hasher.update(data[start : start + 10_000])
    assert hasher.digest() == fragment_id(data)


def test_check_fragment_names_both_ids():
    check_fragment(fragment_id(b"abc"), b"abc")
    with pytest.raises(IntegrityError, match="corrupt"):
        check_fragment(fragment_id(b"abc"), b"abd")


# --- audit proofs ----------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(size=sizes(4, 300), seed=st.integers(0, 1000))
def test_a_proof_verifies_for_every_leaf_of_every_size(size, seed):
    data = random_bytes(seed, size)
    fid = TINY.fragment_id(data)
    count = TINY.leaf_count(size)
    for index in range(count):
        proof = TINY.audit_proof(data, index)
        assert TINY.proof_error(fid, index, proof) is None
        start = index * 4
        assert proof.leaf == data[start : start + 4]
        assert proof.length == size
        assert len(proof.path) <= max(0, (count - 1).bit_length())


@pytest.mark.parametrize("size", [1, LEAF_SIZE, LEAF_SIZE + 1, 4 * LEAF_SIZE, 5 * LEAF_SIZE + 3])
def test_the_real_scheme_proves_every_leaf(size):
    data = random_bytes(size, size)
    fid = fragment_id(data)
    for index in range(leaf_count(size)):
        proof = audit_proof(data, index)
        assert verify_audit_proof(fid, index, proof)
        assert len(proof.leaf) <= LEAF_SIZE


def flip(data: bytes, bit: int) -> bytes:
    bit %= 8 * len(data)
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


proofs = st.tuples(sizes(4, 200), st.integers(0, 1000), st.integers(0, 10**6))


def a_proof(size: int, seed: int, pick: int) -> tuple[bytes, int, AuditProof]:
    data = random_bytes(seed, size)
    index = pick % TINY.leaf_count(size)
    return TINY.fragment_id(data), index, TINY.audit_proof(data, index)


@settings(max_examples=150, deadline=None)
@given(proof=proofs, bit=st.integers(0, 10**6))
def test_any_flipped_bit_in_the_leaf_fails(proof, bit):
    fid, index, good = a_proof(*proof)
    assume(good.leaf)
    bad = AuditProof(flip(good.leaf, bit), good.path, good.length)
    assert not verify_audit_proof_tiny(fid, index, bad)


@settings(max_examples=150, deadline=None)
@given(proof=proofs, which=st.integers(0, 100), bit=st.integers(0, 255))
def test_any_flipped_bit_in_the_path_fails(proof, which, bit):
    fid, index, good = a_proof(*proof)
    assume(good.path)
    path = list(good.path)
    path[which % len(path)] = flip(path[which % len(path)], bit)
    assert not verify_audit_proof_tiny(fid, index, AuditProof(good.leaf, tuple(path), good.length))


@settings(max_examples=150, deadline=None)
@given(proof=proofs, bit=st.integers(0, 63))
def test_any_flipped_bit_in_the_length_fails(proof, bit):
    fid, index, good = a_proof(*proof)
    bad = AuditProof(good.leaf, good.path, good.length ^ (1 << bit))
    assert not verify_audit_proof_tiny(fid, index, bad)


@settings(max_examples=150, deadline=None)
@given(proof=proofs, other=st.integers(-5, 400))
def test_a_wrong_index_fails(proof, other):
    fid, index, good = a_proof(*proof)
    assume(other != index)
    assert not verify_audit_proof_tiny(fid, other, good)


@settings(max_examples=100, deadline=None)
@given(proof=proofs, other=st.tuples(sizes(4, 200), st.integers(0, 1000)))
def test_another_fragments_id_fails(proof, other):
    fid, index, good = a_proof(*proof)
    other_id = TINY.fragment_id(random_bytes(other[1], other[0]))
    assume(other_id != fid)
    assert not verify_audit_proof_tiny(other_id, index, good)


@settings(max_examples=100, deadline=None)
@given(proof=proofs, cut=st.integers(0, 20), extra=st.binary(min_size=32, max_size=32))
def test_a_shortened_or_lengthened_path_fails(proof, cut, extra):
    fid, index, good = a_proof(*proof)
    for path in (good.path[: max(0, len(good.path) - 1 - cut)], (*good.path, extra)):
        if path != good.path:
            bad = AuditProof(good.leaf, path, good.length)
            assert not verify_audit_proof_tiny(fid, index, bad)


def verify_audit_proof_tiny(fid: bytes, index: int, proof: AuditProof) -> bool:
    return TINY.proof_error(fid, index, proof) is None


def test_identical_leaves_are_interchangeable_and_that_is_fine():
    """A proof for leaf 0 of zeros also shows leaf 1 (same bytes, same sibling): the holder
    does have those bytes, which is all an audit asks."""
    data = bytes(2 * LEAF_SIZE)
    assert verify_audit_proof(fragment_id(data), 1, audit_proof(data, 0))


def test_the_reasons_say_what_is_wrong():
    data = random_bytes(3, 3 * LEAF_SIZE + 5)
    fid = fragment_id(data)
    good = audit_proof(data, 3)
    assert "does not exist" in audit_proof_error(fid, 4, good)
    short_leaf = AuditProof(good.leaf + b"x", good.path, good.length)
    assert "should be 5" in audit_proof_error(fid, 3, short_leaf)
    assert "needs 2" in audit_proof_error(fid, 3, AuditProof(good.leaf, good.path[:1], good.length))
    assert "do not lead" in audit_proof_error(fragment_id(b"other"), 3, good)


def test_a_missing_leaf_cannot_be_proved():
    with pytest.raises(ValueError, match="not one of the 2"):
        audit_proof(bytes(LEAF_SIZE + 1), 2)
    with pytest.raises(ValueError):
        SCHEME.audit_proof(b"x", -1)


@pytest.mark.parametrize(
    "fields",
    [("leaf", (), -1), (b"leaf", (b"short",), 1), (b"leaf", [], 1), (b"x", (), True)],
)
def test_a_malformed_proof_cannot_be_built(fields):
    with pytest.raises(LocalProtocolError):
        AuditProof(*fields)
