"""Manifests: round trip, object id = hash, tamper detection, malformed input, size cap."""

import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.codec import (
    MAX_MANIFEST_BYTES,
    ChunkEntry,
    Manifest,
    ObjectEncoder,
    decode_manifest,
    encode_object,
    max_object_size,
    random_key,
)
from p2pstore.codec.manifest import manifest_size_bound, object_id_of
from p2pstore.errors import IntegrityError, LocalProtocolError, RemoteProtocolError

KEY = random_key(b"k" * 32)
MiB = 1024 * 1024
GiB = 1024 * MiB


def _object(size=10_000, chunk_size=4096, k=3, n=5):
    data = bytes(i % 251 for i in range(size))
    chunks = [data[i : i + chunk_size] for i in range(0, size, chunk_size)] or [b""]
    obj, _ = encode_object(KEY, size, chunks, k=k, n=n, chunk_size=chunk_size, rule="eu-4of8")
    return obj


def _fake_manifest(size, chunk_size, k, n):
    """A consistent manifest with made-up ids, to measure sizes without coding gigabytes."""
    chunks = []
    count = max(1, -(-size // chunk_size))
    for i in range(count):
        length = min(chunk_size, size - i * chunk_size) + 16
        ids = tuple(hashlib.sha256(f"{i}/{s}".encode()).digest() for s in range(n))
        chunks.append(ChunkEntry(length, -(-length // k), ids))
    return Manifest(size, chunk_size, "aes-256-gcm", "default", k, n, tuple(chunks))


def test_round_trip_and_object_id():
    obj = _object()
    assert obj.object_id == hashlib.sha256(obj.manifest_bytes).digest()
    assert obj.manifest.object_id() == obj.object_id
    decoded = decode_manifest(obj.manifest_bytes, obj.object_id)
    assert decoded == obj.manifest
    assert decoded.encode() == obj.manifest_bytes
    assert decoded.rule == "eu-4of8"
    assert msgpack.unpackb(obj.manifest_bytes)[0] == 2  # version first


def test_manifest_holds_no_key():
    obj = _object()
    assert KEY not in obj.manifest_bytes
    assert KEY.hex() not in repr(obj)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_changed_byte_is_caught(data):
    obj = _object(size=2000, chunk_size=700)
    raw = bytearray(obj.manifest_bytes)
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(IntegrityError, match="does not match object"):
        decode_manifest(bytes(raw), obj.object_id)


def test_truncated_or_extended_manifest_is_caught():
    obj = _object()
    with pytest.raises(IntegrityError):
        decode_manifest(obj.manifest_bytes[:-1], obj.object_id)
    with pytest.raises(IntegrityError):
        decode_manifest(obj.manifest_bytes + b"\x00", obj.object_id)


def test_wrong_object_id_is_caught():
    obj = _object()
    with pytest.raises(IntegrityError):
        decode_manifest(obj.manifest_bytes, bytes(32))
    with pytest.raises(LocalProtocolError):
        decode_manifest(obj.manifest_bytes, b"short")


def _fields(obj):
    return msgpack.unpackb(obj.manifest_bytes)


def _mutations():
    def set_field(i, value):
        def mutate(f):
            f[i] = value
            return f

        return mutate

    def chunk_field(j, value):
        def mutate(f):
            f[7][0][j] = value
            return f

        return mutate

    def dup_id(f):
        f[7][0][2][1] = f[7][0][2][0]
        return f

    return {
        "version 3": set_field(0, 3),
        "bool k": set_field(5, True),
        "k > n": set_field(5, 9),
        "unknown cipher": set_field(3, "rot13"),
        "bad rule name": set_field(4, "has space"),
        "size as str": set_field(1, "10000"),
        "size disagrees with chunk count": set_field(1, 1),
        "chunk size 0": set_field(2, 0),
        "chunk list a map": set_field(7, {"a": 1}),
        "missing field": lambda f: f[:7],
        "extra field": lambda f: [*f, 0],
        "ciphertext size off": chunk_field(0, 4095),
        "block size off": chunk_field(1, 1),
        "ids not a list": chunk_field(2, b"x" * 160),
        "short id": lambda f: (f[7][0][2].__setitem__(0, b"x" * 31), f)[1],
        "too few ids": lambda f: (f[7][0][2].pop(), f)[1],
        "duplicate id": dup_id,
        "chunk missing": lambda f: (f[7].pop(), f)[1],
    }


@pytest.mark.parametrize("name", list(_mutations()))
def test_malformed_manifest_with_matching_hash_is_a_remote_protocol_error(name):
    fields = _mutations()[name](_fields(_object()))
    data = msgpack.packb(fields, use_bin_type=True)
    with pytest.raises(RemoteProtocolError):
        decode_manifest(data, object_id_of(data))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x91", b"\x93\x01\x02", b"\xa3abc", b"\x01\x02"])
def test_garbage_is_a_remote_protocol_error(data):
    with pytest.raises(RemoteProtocolError):
        decode_manifest(data, object_id_of(data))


def test_non_canonical_encoding_is_refused():
    obj = _object()
    assert obj.manifest_bytes[:2] == b"\x98\x02"
    data = b"\x98\xce\x00\x00\x00\x02" + obj.manifest_bytes[2:]  # version as a uint32
    assert msgpack.unpackb(data) == msgpack.unpackb(obj.manifest_bytes)
    with pytest.raises(RemoteProtocolError, match="canonical"):
        decode_manifest(data, object_id_of(data))


def test_a_version_1_manifest_is_refused_saying_what_to_do():
    """Version 1 named fragments by SHA-256: its ids would never match what holders compute."""
    fields = _fields(_object())
    fields[0] = 1
    data = msgpack.packb(fields, use_bin_type=True)
    with pytest.raises(RemoteProtocolError, match="older p2pstore") as refused:
        decode_manifest(data, object_id_of(data))
    assert "get the object with the release that put it, and put it again" in str(refused.value)


def test_oversized_manifest_is_refused_before_hashing():
    data = bytes(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(RemoteProtocolError, match="cap"):
        decode_manifest(data, object_id_of(data))


def test_manifest_size_bound_holds_and_is_tight():
    for size, chunk_size, k, n in [
        (2 * GiB, 4 * MiB, 4, 8),
        (10**6, 4096, 3, 10),
        (0, 4 * MiB, 1, 1),
        (123457, 1000, 20, 40),
    ]:
        actual = len(_fake_manifest(size, chunk_size, k, n).encode())
        bound = manifest_size_bound(size, chunk_size, n)
        assert actual <= bound <= actual * 1.05 + 200


def test_documented_sizes_and_limits():
    small = len(_fake_manifest(2 * GiB, 4 * MiB, 4, 8).encode())
    assert 140_000 < small < 150_000  # "~145 KB" for 2 GiB, 4-of-8, 4 MiB chunks
    big = manifest_size_bound(100 * GiB, 4 * MiB, 8)
    assert 7_000_000 < big < MAX_MANIFEST_BYTES  # "~7.3 MB" for 100 GiB
    assert 100 * GiB < max_object_size(4 * MiB, 8) < 120 * GiB


def test_too_large_object_is_refused_before_any_work():
    with pytest.raises(LocalProtocolError, match="GiB"):
        ObjectEncoder(KEY, 200 * GiB, k=4, n=8, chunk_size=4 * MiB)
    ObjectEncoder(KEY, 200 * GiB, k=4, n=8, chunk_size=16 * MiB)  # larger chunks fit


def test_manifest_validates_on_construction():
    good = _fake_manifest(100, 40, 2, 3)
    with pytest.raises(LocalProtocolError):
        Manifest(100, 40, "aes-256-gcm", "default", 2, 3, good.chunks[:2])
    with pytest.raises(LocalProtocolError):
        Manifest(100, 40, "aes-256-gcm", "default", 3, 3, good.chunks)
    with pytest.raises(LocalProtocolError):
        ChunkEntry(56, 28, (bytes(32), bytes(32)))
