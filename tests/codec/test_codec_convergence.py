"""Convergent keys: same user + same content -> same object id; anything else differs."""

import hashlib
import io
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.codec import ConvergentKeyDeriver, convergent_key, encode_object, iter_chunks
from p2pstore.errors import LocalProtocolError

ALICE = b"alice's convergence secret 32 by"
BOB = b"bob's convergence secret, 32 byt"
DATA = random.Random(11).randbytes(5000)


def _put(secret, data, chunk_size=1024, k=2, n=4):
    key = convergent_key(secret, data)
    obj, encoded = encode_object(
        key, len(data), iter_chunks(io.BytesIO(data), chunk_size), k=k, n=n, chunk_size=chunk_size
    )
    return obj, encoded


def test_same_user_same_content_stores_once():
    first, frags_1 = _put(ALICE, DATA)
    second, frags_2 = _put(ALICE, bytes(DATA))
    assert first.object_id == second.object_id
    assert first.manifest_bytes == second.manifest_bytes
    assert [c.fragments for c in frags_1] == [c.fragments for c in frags_2]


def test_different_user_or_content_differs():
    mine, _ = _put(ALICE, DATA)
    theirs, _ = _put(BOB, DATA)
    other, _ = _put(ALICE, DATA[:-1] + bytes([DATA[-1] ^ 1]))
    assert len({mine.object_id, theirs.object_id, other.object_id}) == 3
    assert mine.read_cap.key != theirs.read_cap.key


def test_manifest_reveals_no_plaintext_hash():
    obj, _ = _put(ALICE, DATA)
    for digest in (hashlib.sha256(DATA).digest(), hashlib.sha256(DATA).hexdigest().encode()):
        assert digest not in obj.manifest_bytes
    assert obj.read_cap.key != hashlib.sha256(DATA).digest()


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=5))
def test_any_split_gives_the_same_key(data, cuts):
    deriver = ConvergentKeyDeriver(ALICE)
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for a, b in itertools.pairwise(points):
        deriver.update(data[a:b])
    assert deriver.size == len(data)
    assert deriver.key() == convergent_key(ALICE, data)


def test_prefix_and_empty_content_get_their_own_keys():
    assert convergent_key(ALICE, b"ab") != convergent_key(ALICE, b"a")
    assert convergent_key(ALICE, b"") != convergent_key(BOB, b"")


def test_short_secret_is_refused_and_never_printed():
    with pytest.raises(LocalProtocolError, match="at least 16 bytes"):
        ConvergentKeyDeriver(b"too short")
    assert ALICE.decode() not in repr(ConvergentKeyDeriver(ALICE))
