"""Audit messages: bounded by one leaf and one path whatever the fragment; hostile fields refused.

Round trips and fuzzing of every field come from the registry (test_wire_envelope.py); these
tests pin the bounds that make an answer small and the agreement with the codec's tree."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.codec.fragment_ids import LEAF_SIZE, audit_proof, fragment_id, leaf_count
from p2pstore.errors import LocalProtocolError, RemoteProtocolError
from p2pstore.wire import (
    MAX_AUDIT_LEAF,
    MAX_AUDIT_PATH,
    MAX_FRAGMENT,
    AuditChallenge,
    AuditProofReply,
    Kind,
    decode_envelope,
    encode_envelope,
)
from p2pstore.wire.envelope import Envelope

FID = bytes(range(32))


def pack(*items):
    return msgpack.packb(list(items), use_bin_type=True)


def test_the_wire_bounds_fit_the_codecs_tree():
    assert MAX_AUDIT_LEAF == LEAF_SIZE
    for length in (MAX_FRAGMENT, MAX_FRAGMENT - 1, 513 * LEAF_SIZE + 1):
        data = bytes(length)
        deepest = audit_proof(data, 0)  # the first leaf is the deepest in this tree's shape
        assert len(deepest.path) == (leaf_count(length) - 1).bit_length() <= MAX_AUDIT_PATH
        assert len(audit_proof(data, leaf_count(length) - 1).path) <= len(deepest.path)


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(0, 40 * LEAF_SIZE), pick=st.integers(0, 10**6), nonce=st.integers(0, 2**64 - 1)
)
def test_any_real_proof_fits_a_reply_and_survives_the_wire(size, pick, nonce):
    data = bytes([size % 251]) * size
    index = pick % leaf_count(size)
    proof = audit_proof(data, index)
    reply = AuditProofReply(nonce=nonce, leaf=proof.leaf, path=proof.path, length=proof.length)
    again = decode_envelope(encode_envelope(Envelope(Kind.RESPONSE, 7, reply))).message
    assert again == reply
    challenge = AuditChallenge(fragment_id=fragment_id(data), leaf_index=index, nonce=nonce)
    assert (
        decode_envelope(encode_envelope(Envelope(Kind.REQUEST, 7, challenge))).message == challenge
    )


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (pack(0, 1, 40, FID[:31], 0, 0), "AuditChallenge.fragment_id 31 < 32"),
        (pack(0, 1, 40, FID, -1, 0), "AuditChallenge.leaf_index: -1 out of range"),
        (pack(0, 1, 40, FID, MAX_FRAGMENT // LEAF_SIZE, 0), "leaf_index: 1024 out of range"),
        (pack(0, 1, 40, FID, 0, -5), "AuditChallenge.nonce: -5 out of range"),
        (pack(0, 1, 40, FID, 0), "AuditChallenge: expected 3 fields, got 2"),
        (pack(1, 1, 41, 0, b"x" * (LEAF_SIZE + 1), [], 1), "AuditProofReply.leaf 16385 > 16384"),
        (pack(1, 1, 41, 0, b"x", [FID] * (MAX_AUDIT_PATH + 1), 1), "AuditProofReply.path"),
        (pack(1, 1, 41, 0, b"x", [FID[:31]], 1), r"AuditProofReply.path\[0\] 31 < 32"),
        (pack(1, 1, 41, 0, b"x", [], MAX_FRAGMENT + 1), "AuditProofReply.length"),
        (pack(1, 1, 41, 0, b"x", [], -1), "AuditProofReply.length"),
        (pack(1, 1, 41, 0, "leaf", [], 1), "AuditProofReply.leaf: expected bytes, got str"),
    ],
)
def test_hostile_audit_fields_are_refused_with_a_reason(payload, match):
    with pytest.raises(RemoteProtocolError, match=match):
        decode_envelope(payload)


def test_we_cannot_send_an_oversized_answer():
    with pytest.raises(LocalProtocolError):
        AuditProofReply(nonce=0, leaf=b"x" * (LEAF_SIZE + 1), path=(), length=LEAF_SIZE + 1)
    with pytest.raises(LocalProtocolError):
        AuditProofReply(nonce=0, leaf=b"x", path=(FID,) * (MAX_AUDIT_PATH + 1), length=1)
