"""Done-when: for any bytes, any 1 <= k <= n <= 256 and any chunk size, decoding any k fragments
of the encoding gives the input back; any changed byte in a fragment is caught by its id."""

import io
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pstore.codec import (
    ObjectDecoder,
    ObjectEncoder,
    check_fragment,
    check_fragment_of,
    decode_manifest,
    decode_object,
    encode_object,
    iter_chunks,
    random_key,
)
from p2pstore.errors import IntegrityError, LocalProtocolError, NotEnoughFragments

KEY = random_key(bytes(range(32)))


def _payload(n: int):
    """Any bytes: arbitrary small values, or pseudo-random ones up to a few hundred KiB (kept
    tiny when n is large so the run stays fast)."""
    limit = 300_000 if n <= 12 else 20_000 if n <= 40 else 1_500
    return st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda seed, size: random.Random(seed).randbytes(size),
            st.integers(0, 2**32),
            st.integers(0, limit),
        ),
    )


@st.composite
def cases(draw):
    n = draw(st.one_of(st.integers(1, 12), st.integers(1, 256)))
    k = draw(st.integers(1, n))
    data = draw(_payload(n))
    # Any chunk size, but not so small that chunks x n explodes.
    max_chunks = max(1, 3000 // n)
    low = max(1, -(-len(data) // max_chunks))
    chunk_size = draw(st.integers(low, max(low, len(data) + 50)))
    return data, k, n, chunk_size


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), rnd=st.randoms(use_true_random=False), extra=st.integers(0, 3))
def test_any_k_fragments_rebuild_the_object(case, rnd, extra):
    data, k, n, chunk_size = case
    encoder = ObjectEncoder(KEY, len(data), k=k, n=n, chunk_size=chunk_size)
    encoded = [encoder.encode_chunk(c) for c in iter_chunks(io.BytesIO(data), chunk_size)]
    obj = encoder.finish()
    manifest = decode_manifest(obj.manifest_bytes, obj.object_id)
    assert manifest == obj.manifest

    decoder = ObjectDecoder(manifest, obj.read_cap.key)
    out = []
    for chunk in encoded:
        shares = rnd.sample(range(n), min(n, k + extra))
        out.append(decoder.decode_chunk(chunk.index, {s: chunk.fragments[s] for s in shares}))
    assert b"".join(out) == data


@settings(max_examples=120, deadline=None)
@given(case=cases(), where=st.randoms(use_true_random=False), delta=st.integers(1, 255))
def test_any_changed_byte_in_a_fragment_is_caught_by_its_id(case, where, delta):
    data, k, n, chunk_size = case
    obj, encoded = encode_object(
        KEY, len(data), iter_chunks(io.BytesIO(data), chunk_size), k=k, n=n, chunk_size=chunk_size
    )
    chunk = where.choice(encoded)
    share = where.randrange(n)
    original = chunk.fragments[share]
    position = where.randrange(len(original))
    bad = bytearray(original)
    bad[position] ^= delta
    bad = bytes(bad)

    with pytest.raises(IntegrityError):
        check_fragment(chunk.fragment_ids[share], bad)
    with pytest.raises(IntegrityError):
        check_fragment_of(obj.manifest, chunk.index, share, bad)
    others = [s for s in range(n) if s != share][: k - 1]
    fragments = {s: chunk.fragments[s] for s in others} | {share: bad}
    with pytest.raises(IntegrityError):
        ObjectDecoder(obj.manifest, KEY).decode_chunk(chunk.index, fragments)


def test_k_equals_one_gives_distinct_fragment_ids_per_share():
    obj, (chunk,) = encode_object(KEY, 5, [b"hello"], k=1, n=5)
    assert len(set(chunk.fragment_ids)) == 5
    for share in range(5):
        assert (
            ObjectDecoder(obj.manifest, KEY).decode_chunk(0, {share: chunk.fragments[share]})
            == b"hello"
        )


def test_fewer_than_k_fragments_is_not_enough():
    obj, (chunk,) = encode_object(KEY, 100, [bytes(100)], k=4, n=8)
    with pytest.raises(NotEnoughFragments) as info:
        ObjectDecoder(obj.manifest, KEY).decode_chunk(0, {s: chunk.fragments[s] for s in (1, 5, 7)})
    assert (info.value.needed, info.value.found) == (4, 3)


def test_fragment_passed_under_the_wrong_share_number_is_caught():
    obj, (chunk,) = encode_object(KEY, 100, [bytes(100)], k=2, n=4)
    with pytest.raises(IntegrityError):
        ObjectDecoder(obj.manifest, KEY).decode_chunk(
            0, {0: chunk.fragments[1], 1: chunk.fragments[0]}
        )


@pytest.mark.parametrize("hashed", [False, True])
def test_already_hashed_fragments_skip_only_the_hash(hashed):
    """A caller that checked the ids (a fetch) is not made to hash twice; the header and size
    checks still catch a fragment given under another share."""
    obj, (chunk,) = encode_object(KEY, 100, [b"x" * 100], k=2, n=4)
    decoder = ObjectDecoder(obj.manifest, KEY)
    given = {2: chunk.fragments[2], 3: chunk.fragments[3]}
    assert decoder.decode_chunk(0, given, hashed=hashed) == b"x" * 100
    with pytest.raises(IntegrityError, match="header" if hashed else "corrupt"):
        decoder.decode_chunk(0, {2: chunk.fragments[3], 3: chunk.fragments[2]}, hashed=hashed)


def test_decode_object_streams_chunks_and_catches_truncation():
    data = random.Random(3).randbytes(10_000)
    obj, encoded = encode_object(
        KEY, len(data), iter_chunks(io.BytesIO(data), 3000), k=2, n=3, chunk_size=3000
    )
    maps = [{1: c.fragments[1], 2: c.fragments[2]} for c in encoded]
    assert b"".join(decode_object(obj.manifest, KEY, maps)) == data
    with pytest.raises(IntegrityError, match="truncated"):
        b"".join(decode_object(obj.manifest, KEY, maps[:-1]))


def test_encoder_refuses_misuse():
    encoder = ObjectEncoder(KEY, 10, k=2, n=3, chunk_size=4)
    with pytest.raises(LocalProtocolError, match="must be 4 bytes"):
        encoder.encode_chunk(b"abc")
    encoder.encode_chunk(b"abcd")
    with pytest.raises(LocalProtocolError, match="encode every chunk"):
        encoder.finish()
    encoder.encode_chunk(b"efgh")
    encoder.encode_chunk(b"ij")
    with pytest.raises(LocalProtocolError, match="only 3 chunks"):
        encoder.encode_chunk(b"")
    assert encoder.finish().manifest.chunk_count == 3


@pytest.mark.parametrize(("k", "n"), [(0, 1), (3, 2), (1, 257), (True, 2), (2.0, 4)])
def test_invalid_coding_parameters_are_refused(k, n):
    with pytest.raises(LocalProtocolError, match="k"):
        ObjectEncoder(KEY, 10, k=k, n=n)
