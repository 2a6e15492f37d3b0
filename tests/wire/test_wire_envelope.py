"""Envelopes: every registered message round-trips; hostile bytes only ever give
RemoteProtocolError.  Strategies come from the schemas, so new messages are covered unchanged."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.errors import LocalProtocolError, RemoteProtocolError
from p2pstore.wire import (
    DEFAULT_MAX_FRAME,
    MAX_REQUEST_ID,
    MESSAGE_TYPES,
    Envelope,
    Hello,
    Kind,
    PeerSummary,
    Ping,
    StatusReply,
    StatusRequest,
    decode_envelope,
    encode_envelope,
    frame_header,
)
from p2pstore.wire.envelope import MAX_ARRAY_ITEMS
from p2pstore.wire.messages import MAX_PADDING, max_array_len
from p2pstore.wire.schema import (
    BoolType,
    BytesType,
    FloatType,
    IntType,
    OptionalType,
    RecordType,
    StrType,
    TupleType,
    schema_of,
)

# --- strategies derived from the schemas -------------------------------------------------------


def strategy_for(ftype):
    """Values of one compiled field type, sizes capped so examples stay small but still reach
    both bounds when the bound is small."""
    if isinstance(ftype, IntType):
        return st.integers(ftype.min, ftype.max)
    if isinstance(ftype, BoolType):
        return st.booleans()
    if isinstance(ftype, FloatType):
        return st.floats()
    if isinstance(ftype, StrType):
        return st.text(min_size=ftype.min_len, max_size=min(ftype.max_len, ftype.min_len + 40))
    if isinstance(ftype, BytesType):
        return st.binary(min_size=ftype.min_len, max_size=min(ftype.max_len, ftype.min_len + 300))
    if isinstance(ftype, TupleType):
        items = strategy_for(ftype.item)
        top = min(ftype.max_len, ftype.min_len + 4)
        return st.lists(items, min_size=ftype.min_len, max_size=top).map(tuple)
    if isinstance(ftype, OptionalType):
        return st.none() | strategy_for(ftype.inner)
    if isinstance(ftype, RecordType):
        return record_strategy(ftype.schema.cls)
    raise AssertionError(f"no strategy for {ftype!r}: extend strategy_for")


def record_strategy(cls):
    return st.builds(cls, *(strategy_for(f.type) for f in schema_of(cls).fields))


def envelope_strategy(message_cls=None):
    classes = [MESSAGE_TYPES[code] for code in sorted(MESSAGE_TYPES)]
    messages = (
        record_strategy(message_cls)
        if message_cls
        else st.sampled_from(classes).flatmap(record_strategy)
    )
    notices = st.builds(Envelope, st.just(Kind.NOTICE), st.just(0), messages)
    exchanges = st.builds(
        Envelope,
        st.sampled_from([Kind.REQUEST, Kind.RESPONSE]),
        st.integers(1, MAX_REQUEST_ID),
        messages,
    )
    return notices | exchanges


def assert_round_trips(envelope):
    payload = encode_envelope(envelope)
    again = decode_envelope(payload)
    assert type(again.message) is type(envelope.message)
    # Compare encodings as well as values: a float field may hold NaN, which is != itself.
    assert encode_envelope(again) == payload
    return again


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(MESSAGE_TYPES))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_registered_message_round_trips(code, data):
    envelope = data.draw(envelope_strategy(MESSAGE_TYPES[code]))
    again = assert_round_trips(envelope)
    assert again == envelope or encode_envelope(again) == encode_envelope(envelope)


def test_status_reply_round_trips_with_many_peers():
    peers = tuple(
        PeerSummary(bytes([i % 256]) * 20, "dc", "FR-GES", f"h{i}:1", i % 2 == 0)
        for i in range(1024)
    )
    envelope = Envelope(Kind.RESPONSE, 9, StatusReply(b"n" * 20, "dc", "FR-GES", "h:1", peers))
    assert decode_envelope(encode_envelope(envelope)) == envelope


def test_largest_ping_fits_in_the_default_frame():
    envelope = Envelope(Kind.REQUEST, MAX_REQUEST_ID, Ping(2**64 - 1, b"\xab" * MAX_PADDING))
    payload = encode_envelope(envelope)
    frame_header(len(payload))  # does not raise
    assert len(payload) <= DEFAULT_MAX_FRAME
    assert decode_envelope(payload) == envelope
    with pytest.raises(LocalProtocolError, match=r"bytes too long: Ping\.padding"):
        Ping(1, b"\xab" * (MAX_PADDING + 1))


# --- hostile input -----------------------------------------------------------------------------


def decode_or_refuse(payload):
    """Decode, allowing only RemoteProtocolError; a decoded envelope must re-encode to itself."""
    try:
        envelope = decode_envelope(payload)
    except RemoteProtocolError as exc:
        assert str(exc)  # every refusal says what was wrong
        return None
    assert_round_trips(envelope)
    return envelope


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_remote_protocol_error(payload):
    decode_or_refuse(payload)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=5) | st.binary(max_size=5), children, max_size=3)
    ),
    max_leaves=15,
)
# Start like a real envelope most of the time, so the field checks are reached, not just the
# top-level ones.
envelope_shaped = st.tuples(
    st.sampled_from([0, 1, 2]) | st.integers(-3, 2**32),
    st.sampled_from([0, 1, 2**32 - 1]) | st.integers(-3, 2**33),
    st.sampled_from(sorted(MESSAGE_TYPES)) | st.integers(-1, 2**16),
).flatmap(lambda head: st.lists(values, max_size=7).map(lambda rest: [*head, *rest]))


@settings(max_examples=200, deadline=None)
@given(values | envelope_shaped)
def test_arbitrary_msgpack_values_only_raise_remote_protocol_error(value):
    decode_or_refuse(msgpack.packb(value, use_bin_type=True))


@settings(max_examples=150, deadline=None)
@given(envelope=envelope_strategy(), data=st.data())
def test_mutated_envelopes_only_raise_remote_protocol_error(envelope, data):
    payload = bytearray(encode_envelope(envelope))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(payload) - 1))
        payload[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    decode_or_refuse(bytes(payload[:cut]))


def test_every_truncation_of_an_envelope_is_refused():
    peers = (PeerSummary(b"p" * 20, "dc", "r", "a:1", True),)
    payload = encode_envelope(
        Envelope(Kind.RESPONSE, 3, StatusReply(b"n" * 20, "d", "r", "a", peers))
    )
    for cut in range(len(payload)):
        with pytest.raises(RemoteProtocolError):
            decode_envelope(payload[:cut])


def pack(*items):
    return msgpack.packb(list(items), use_bin_type=True)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x91" * 100_000 + b"\xc0", "nesting too deep"),
        (b"", "invalid msgpack"),
        (b"\xc1", "invalid msgpack"),
        (pack(2, 0, 999), "unknown message type 999"),
        (pack(2, 0, -1), "unknown message type -1"),
        (pack(2, 0, "1"), "envelope type: expected int, got str"),
        (pack(0, 1, 3, "7", b""), "Ping.nonce: expected int, got str"),
        (pack(0, 1, 3, True, b""), "Ping.nonce: expected int, got bool"),
        (pack(0, 1, 3, 1), "Ping: expected 2 fields, got 1"),
        (pack(0, 1, 3, 1, b"", 5), "Ping: expected 2 fields, got 3"),
        (pack(0, 1, 3, 1, "padding"), "Ping.padding: expected bytes, got str"),
        (pack(2, 0, 1, 1, "h:1", "x" * 5000), r"string too long: Hello.software 5000 > 1024"),
        (
            pack(1, 1, 7, b"n" * 19, "d", "r", "a", []),
            r"bytes too short: StatusReply.node_id 19 < 20",
        ),
        (
            pack(1, 1, 7, b"n" * 20, "d", "r", "a", [[b"p" * 20, "d", "r", "a", 1]]),
            r"StatusReply.peers\[0\].connected: expected bool, got int",
        ),
        (pack(0, 1, 3, 1, b"") + b"\x00", "trailing bytes after message"),
        (pack(3, 1, 6), "unknown kind 3"),
        (pack(True, 1, 6), "unknown kind bool"),
        (pack(0, 0, 6), "out of range"),
        (pack(1, 2**32, 6), "out of range"),
        (pack(2, 5, 2, "bye"), "a notice has request id 0"),
        (pack(0, 1.0, 6), "request_id: expected int, got float"),
        (pack(0, 1), "expected an array"),
        (msgpack.packb(5), "expected an array"),
        (msgpack.packb({"kind": 0}), "invalid msgpack: .*max_map_len"),
        (b"\x93\x00\x01\xc7\x00\x01", "extension type 1 is not allowed"),
        (b"\x93\x00\x01" + msgpack.packb(msgpack.Timestamp(1, 0)), "invalid msgpack"),
        (b"\x95\x02\x00\x01\x01\xa2\xff\xfe\xa0", "invalid UTF-8"),
        (b"\xdd\xff\xff\xff\xff", "invalid msgpack: .*max_array_len"),
        (b"\xc6\xff\xff\xff\xff", "invalid msgpack"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(payload, match):
    with pytest.raises(RemoteProtocolError, match=match):
        decode_envelope(payload)


def test_arrays_longer_than_any_schema_allows_are_refused_by_msgpack():
    longest = max_array_len()
    with pytest.raises(RemoteProtocolError, match="max_array_len"):
        decode_envelope(pack(0, 1, 6, [None] * (longest + 1)))


def test_many_small_arrays_exhaust_the_item_budget():
    width = max_array_len()
    assert width * (width + 1) > MAX_ARRAY_ITEMS  # each array counts its items plus one
    payload = pack(0, 1, 6, [[None] * width] * width)
    with pytest.raises(RemoteProtocolError, match=f"more than {MAX_ARRAY_ITEMS} array items"):
        decode_envelope(payload)


# --- building envelopes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "request_id", "message", "match"),
    [
        (Kind.NOTICE, 1, StatusRequest(), "notice has request id 0"),
        (Kind.REQUEST, 0, StatusRequest(), "out of range"),
        (Kind.RESPONSE, MAX_REQUEST_ID + 1, StatusRequest(), "out of range"),
        (Kind.REQUEST, True, StatusRequest(), "expected int, got bool"),
        (0, 1, StatusRequest(), "expected Kind, got int"),
        (Kind.REQUEST, 1, PeerSummary(b"p" * 20, "d", "r", "a", True), "expected a Message"),
    ],
)
def test_inconsistent_envelopes_are_local_errors(kind, request_id, message, match):
    with pytest.raises(LocalProtocolError, match=match):
        Envelope(kind, request_id, message)


def test_notices_and_requests():
    hello = Envelope(Kind.NOTICE, 0, Hello(1, "10.0.0.1:7000", "p2pstore/0.1"))
    assert assert_round_trips(hello) == hello
    ping = Envelope(Kind.REQUEST, 1, Ping(-1))
    assert assert_round_trips(ping) == ping
