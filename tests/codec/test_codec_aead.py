"""Chunk encryption: wrong key, reordered, truncated, swapped chunks are caught; layouts never
share a keystream."""

import random

import pytest

from p2pstore.codec import (
    CIPHERS,
    ChunkCipher,
    ObjectDecoder,
    decode_manifest,
    encode_object,
    random_key,
)
from p2pstore.codec.manifest import Manifest
from p2pstore.errors import IntegrityError, LocalProtocolError

KEY = random_key(b"\x01" * 32)
OTHER = random_key(b"\x02" * 32)
CS = 1000
DATA = random.Random(7).randbytes(3 * CS)  # three full, equal-size chunks


def _chunks(data, cs=CS):
    return [data[i : i + cs] for i in range(0, len(data), cs)]


@pytest.fixture(params=sorted(CIPHERS))
def cipher(request):
    return request.param


def test_wrong_key_raises_and_never_returns_bytes(cipher):
    obj, encoded = encode_object(
        KEY, len(DATA), _chunks(DATA), k=2, n=4, chunk_size=CS, cipher=cipher
    )
    decoder = ObjectDecoder(obj.manifest, OTHER)
    for chunk in encoded:
        with pytest.raises(IntegrityError, match="wrong key or corrupted chunk"):
            decoder.decode_chunk(chunk.index, dict(enumerate(chunk.fragments)))


def test_chunks_cannot_be_reordered(cipher):
    c = ChunkCipher(KEY, cipher=cipher, chunk_size=CS, object_size=len(DATA))
    sealed = [c.seal(i, p) for i, p in enumerate(_chunks(DATA))]
    assert c.open(1, sealed[1]) == DATA[CS : 2 * CS]
    with pytest.raises(IntegrityError):
        c.open(0, sealed[1])
    with pytest.raises(IntegrityError):
        c.open(1, sealed[0])


def test_truncation_and_resizing_are_caught(cipher):
    full = ChunkCipher(KEY, cipher=cipher, chunk_size=CS, object_size=len(DATA))
    sealed = [full.seal(i, p) for i, p in enumerate(_chunks(DATA))]
    # The first two chunks passed off as a whole object of 2 chunks: chunk 1 was not last.
    short = ChunkCipher(KEY, cipher=cipher, chunk_size=CS, object_size=2 * CS)
    with pytest.raises(IntegrityError):
        short.open(1, sealed[1])
    with pytest.raises(IntegrityError):
        short.open(0, sealed[0])  # the object size is bound into every chunk


def test_forged_truncated_manifest_is_caught():
    obj, encoded = encode_object(KEY, len(DATA), _chunks(DATA), k=2, n=3, chunk_size=CS)
    m = obj.manifest
    forged = Manifest(2 * CS, CS, m.cipher, m.rule, m.k, m.n, m.chunks[:2])
    decoder = ObjectDecoder(forged, KEY)
    with pytest.raises(IntegrityError):
        decoder.decode_chunk(1, dict(enumerate(encoded[1].fragments)))


def test_swapped_manifest_entries_are_caught():
    obj, encoded = encode_object(KEY, len(DATA), _chunks(DATA), k=2, n=3, chunk_size=CS)
    m = obj.manifest
    swapped = Manifest(
        m.plaintext_size, CS, m.cipher, m.rule, m.k, m.n, (m.chunks[1], m.chunks[0], m.chunks[2])
    )
    decoder = ObjectDecoder(swapped, KEY)
    with pytest.raises(IntegrityError):
        decoder.decode_chunk(0, dict(enumerate(encoded[1].fragments)))


def test_layouts_never_share_a_keystream(cipher):
    # Same key (e.g. a convergent key for the same content), different chunk sizes: chunk 0
    # must be encrypted under different keystreams, else two layouts would leak plaintext.
    p = DATA[:600]
    a = ChunkCipher(KEY, cipher=cipher, chunk_size=600, object_size=1200).seal(0, p)
    b = ChunkCipher(KEY, cipher=cipher, chunk_size=800, object_size=1200).seal(0, DATA[:800])
    stream_a = bytes(x ^ y for x, y in zip(a[:600], p, strict=True))
    stream_b = bytes(x ^ y for x, y in zip(b[:600], p, strict=True))
    assert stream_a != stream_b


def test_ciphers_are_bound_into_the_manifest():
    obj, _ = encode_object(KEY, 10, [b"0123456789"], k=1, n=2, cipher="chacha20-poly1305")
    m = decode_manifest(obj.manifest_bytes, obj.object_id)
    assert m.cipher == "chacha20-poly1305"


def test_bad_keys_ciphers_and_lengths_are_refused():
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        ChunkCipher(b"short", cipher="aes-256-gcm", chunk_size=10, object_size=10)
    with pytest.raises(LocalProtocolError, match="unknown cipher"):
        ChunkCipher(KEY, cipher="des", chunk_size=10, object_size=10)
    c = ChunkCipher(KEY, cipher="aes-256-gcm", chunk_size=10, object_size=15)
    with pytest.raises(LocalProtocolError, match="must be 5 bytes"):
        c.seal(1, b"123456")
    with pytest.raises(LocalProtocolError, match="out of range"):
        c.seal(2, b"")
    with pytest.raises(IntegrityError):
        c.open(1, b"x" * 20)


def test_random_key_needs_enough_entropy():
    with pytest.raises(LocalProtocolError, match="entropy"):
        random_key(b"x" * 31)
    assert random_key(b"a" * 32) != random_key(b"b" * 32)
    assert len(random_key(b"a" * 64)) == 32


def test_empty_object_still_authenticates_its_key():
    obj, (chunk,) = encode_object(KEY, 0, [b""], k=2, n=3)
    assert ObjectDecoder(obj.manifest, KEY).decode_chunk(0, dict(enumerate(chunk.fragments))) == b""
    with pytest.raises(IntegrityError):
        ObjectDecoder(obj.manifest, OTHER).decode_chunk(0, dict(enumerate(chunk.fragments)))
