"""Frames: any split of a stream yields the same frames; limits hold before bodies arrive."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.errors import LocalProtocolError, RemoteProtocolError
from p2pstore.wire import DEFAULT_MAX_FRAME, FRAME_HEADER, FrameDecoder, frame_header

SMALL_MAX = 300


def framed(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    return frame_header(len(payload), max_frame) + payload


def drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=SMALL_MAX), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
)
def test_any_split_of_a_stream_yields_the_same_frames(payloads, cuts):
    stream = b"".join(framed(p, SMALL_MAX) for p in payloads)
    points = sorted({c for c in cuts if c <= len(stream)} | {0, len(stream)})
    decoder = FrameDecoder(max_frame=SMALL_MAX)
    received = []
    for start, end in itertools.pairwise(points):
        chunk = stream[start:end]
        decoder.feed(memoryview(chunk))
        received.extend(drain(decoder))
        # Drained after each feed, the decoder holds less than one header plus one frame.
        assert decoder.buffered < FRAME_HEADER.size + SMALL_MAX
        assert decoder.buffered <= SMALL_MAX + FRAME_HEADER.size + len(chunk)
    assert received == payloads
    assert decoder.buffered == 0
    assert decoder.at_frame_boundary()
    decoder.check_eof()


def test_oversized_header_is_rejected_before_the_body_arrives():
    decoder = FrameDecoder(max_frame=1000)
    decoder.feed(FRAME_HEADER.pack(1001))
    with pytest.raises(RemoteProtocolError, match="1001 bytes"):
        decoder.next_frame()
    assert decoder.buffered == 0
    decoder.feed(b"x" * 5000)  # the rest of the stream is discarded, not held
    assert decoder.buffered == 0
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()
    assert not decoder.at_frame_boundary()


def test_oversized_header_after_a_good_frame():
    decoder = FrameDecoder(max_frame=10)
    decoder.feed(framed(b"ok", 10) + FRAME_HEADER.pack(2**32 - 1))
    assert decoder.next_frame() == b"ok"
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_a_frame_of_exactly_max_frame_is_accepted():
    decoder = FrameDecoder(max_frame=64)
    decoder.feed(framed(b"a" * 64, 64))
    assert decoder.next_frame() == b"a" * 64


def test_zero_length_frames():
    decoder = FrameDecoder()
    decoder.feed(framed(b"") * 3)
    assert drain(decoder) == [b"", b"", b""]


@pytest.mark.parametrize("held", [1, 3, 4, 10])
def test_truncated_frame_is_detected_at_eof(held):
    decoder = FrameDecoder()
    decoder.feed(framed(b"0123456789")[:held])
    assert decoder.next_frame() is None
    assert not decoder.at_frame_boundary()
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        decoder.check_eof()


def test_boundary_with_whole_frames_still_buffered():
    decoder = FrameDecoder()
    decoder.feed(framed(b"one") + framed(b"two"))
    assert decoder.at_frame_boundary()
    decoder.feed(b"\x00")
    assert not decoder.at_frame_boundary()


def test_large_frame_arriving_in_many_reads():
    payload = bytes(range(256)) * 4096  # 1 MiB
    stream = framed(payload) + framed(b"tail")
    decoder = FrameDecoder()
    frames = []
    for i in range(0, len(stream), 65536):
        decoder.feed(stream[i : i + 65536])
        frames.extend(drain(decoder))
    assert frames == [payload, b"tail"]


def test_frame_header_limits():
    assert frame_header(5) == b"\x00\x00\x00\x05"
    assert frame_header(DEFAULT_MAX_FRAME) == FRAME_HEADER.pack(DEFAULT_MAX_FRAME)
    with pytest.raises(LocalProtocolError):
        frame_header(DEFAULT_MAX_FRAME + 1)
    with pytest.raises(LocalProtocolError):
        frame_header(11, max_frame=10)
    with pytest.raises(LocalProtocolError):
        frame_header(-1)


@pytest.mark.parametrize("bad", [-1, 2**32, True, 1.5])
def test_invalid_max_frame(bad):
    with pytest.raises(LocalProtocolError):
        FrameDecoder(max_frame=bad)


@settings(max_examples=100, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=SMALL_MAX), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
)
def test_announced_is_the_length_of_the_frame_being_received(payloads, cuts):
    stream = b"".join(framed(p, SMALL_MAX) for p in payloads)
    points = sorted({c for c in cuts if c <= len(stream)} | {0, len(stream)})
    decoder = FrameDecoder(max_frame=SMALL_MAX)
    done = 0
    for start, end in itertools.pairwise(points):
        decoder.feed(stream[start:end])
        done += len(drain(decoder))
        if decoder.buffered >= FRAME_HEADER.size:
            assert decoder.announced == len(payloads[done])
        else:
            assert decoder.announced is None
