"""Version negotiation and the shapes of the previous version.

The fixtures in ``fixtures/v2`` are bytes a version-2 release sent (see their ``make.py``):
this release must read them as they are and write those messages byte for byte alike, and its
own Hello must pass the version-2 release's check (three fields, protocol version 2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_wire_buckets import ENTRY

from p2pstore.errors import RemoteProtocolError
from p2pstore.wire import (
    MESSAGE_TYPES,
    PREVIOUS_VERSION,
    PROTOCOL_VERSION,
    SPOKEN_VERSIONS,
    BucketPullReply,
    BucketPush,
    Envelope,
    FindValue,
    FindValueReply,
    Hello,
    Kind,
    Ping,
    RenewLeases,
    RenewLeasesReply,
    SignedRecord,
    Store,
    check_protocol_version,
    decode_envelope,
    encode_envelope,
    make_hello,
    policy_refusal,
    required_version,
    settle,
    spoken_by,
)
from p2pstore.wire.versions import MAX_OFFERED, MESSAGE_SINCE, offer

FIXTURES = Path(__file__).parent / "fixtures" / "v2"
V2_NAMES = (
    "hello",
    "ping",
    "find_value",
    "find_value_reply",
    "store",
    "get_fragment",
    "error_reply",
)


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.msgpack").read_bytes()


def test_this_release_speaks_its_version_and_the_previous_one() -> None:
    assert SPOKEN_VERSIONS == (PREVIOUS_VERSION, PROTOCOL_VERSION) == (2, 3)


@pytest.mark.parametrize("name", V2_NAMES)
def test_version_2_messages_read_and_write_byte_for_byte(name: str) -> None:
    payload = fixture(name)
    envelope = decode_envelope(payload)
    assert encode_envelope(envelope) == payload
    assert required_version(envelope.message) <= PREVIOUS_VERSION


def test_a_version_2_hello_settles_on_version_2() -> None:
    hello = decode_envelope(fixture("hello")).message
    assert isinstance(hello, Hello)
    assert spoken_by(hello) == {2}
    assert check_protocol_version(hello) == 2


def v2_release_accepts(payload: bytes) -> bool:
    """What a version-2 release checks of a Hello frame: the envelope, then exactly three
    fields (decoding is strict), then ``protocol_version == 2`` (its check_protocol_version)."""
    raw = msgpack.unpackb(payload, raw=False, use_list=False)
    kind, request_id, code, *fields = raw
    if (kind, request_id, code) != (int(Kind.NOTICE), 0, Hello.TYPE) or len(fields) != 3:
        return False
    version, address, software = fields
    return (
        version == 2
        and isinstance(address, str)
        and isinstance(software, str)
        and len(software) <= 1024
    )


def test_this_release_hello_passes_the_version_2_check() -> None:
    ours = make_hello(SPOKEN_VERSIONS, "10.0.0.1:7000", "p2pstore/0.1.0")
    assert v2_release_accepts(encode_envelope(Envelope(Kind.NOTICE, 0, ours)))
    assert v2_release_accepts(fixture("hello"))
    # A node whose policy allows only 3 is refused by a version-2 release, as it must be.
    only_new = make_hello((PROTOCOL_VERSION,), "10.0.0.1:7000", "p2pstore/0.1.0")
    assert not v2_release_accepts(encode_envelope(Envelope(Kind.NOTICE, 0, only_new)))
    # Offering one version writes exactly the Hello of a release that speaks only that one.
    alone = make_hello((2,), "10.0.0.1:7000", "p2pstore/0.1.0")
    assert encode_envelope(Envelope(Kind.NOTICE, 0, alone)) == fixture("hello")


def record(kind: int) -> SignedRecord:
    base = decode_envelope(fixture("store")).message
    assert isinstance(base, Store)
    fields = {name: getattr(base.record, name) for name in SignedRecord.__dataclass_fields__}
    return SignedRecord(**{**fields, "kind": kind})


@pytest.mark.parametrize(
    ("message", "needed"),
    [
        (Ping(nonce=1, padding=b""), 2),
        (Store(record=record(1)), 2),
        (Store(record=record(4)), 3),
        (Store(record=record(5)), 3),
        (Store(record=record(6)), 3),
        (FindValue(kind=3, key=bytes(20)), 2),
        (FindValue(kind=4, key=bytes(20)), 3),
        (FindValueReply(records=(record(1), record(5)), contacts=()), 3),
        (FindValueReply(records=(record(2),), contacts=()), 2),
        (RenewLeasesReply(applied=0, refused=()), 3),
        (BucketPush(bucket=bytes(20), entries=(ENTRY,)), 2),
        (BucketPush(bucket=bytes(20), entries=(ENTRY, dataclasses.replace(ENTRY, op=5))), 3),
        (BucketPullReply(entries=(dataclasses.replace(ENTRY, op=5),), cursor=b"", summary=b""), 3),
    ],
)
def test_what_each_message_needs(message, needed) -> None:
    assert required_version(message) == needed


def test_every_message_newer_than_version_2_is_marked_so() -> None:
    """A message registered after version 2 but not in ``MESSAGE_SINCE`` would be sent to a
    version-2 peer, which drops the session on an unknown type."""
    v2_codes = {int(c) for c in (FIXTURES / "message_codes.txt").read_text().split()}
    assert v2_codes <= set(MESSAGE_TYPES)
    for code in MESSAGE_TYPES:
        assert (MESSAGE_SINCE.get(code, PREVIOUS_VERSION) == PREVIOUS_VERSION) == (code in v2_codes)
    assert {RenewLeases.TYPE, RenewLeasesReply.TYPE, 54, 55} == set(MESSAGE_SINCE)


versions = st.frozensets(st.integers(1, 0xFFFF), min_size=1, max_size=MAX_OFFERED)


@given(versions, versions)
def test_both_sides_settle_alike_on_the_highest_common_version(a, b) -> None:
    hello_a = make_hello(a, "a:1", "p2pstore/x")
    hello_b = make_hello(b, "b:1", "p2pstore/y")
    assert spoken_by(hello_a) == a and spoken_by(hello_b) == b
    common = a & b
    if common:
        assert check_protocol_version(hello_a, b) == check_protocol_version(hello_b, a)
        assert check_protocol_version(hello_a, b) == max(common) == settle(a, b) == settle(b, a)
    else:
        assert settle(a, b) is None
        for hello, ours in ((hello_a, b), (hello_b, a)):
            with pytest.raises(RemoteProtocolError, match="upgrade the older node"):
                check_protocol_version(hello, ours)


@given(versions, st.one_of(st.none(), st.frozensets(st.integers(1, 10), max_size=4)))
def test_a_node_offers_what_the_policy_allows_and_refuses_the_rest(spoken, allowed) -> None:
    offered = offer(spoken, allowed)
    assert offered and set(offered) <= spoken
    if allowed and spoken & allowed:
        assert set(offered) == spoken & allowed
    else:
        assert set(offered) == spoken
    for version in spoken:
        refusal = policy_refusal(version, allowed)
        assert (refusal is None) == (not allowed or version in allowed)
        if refusal is not None:
            assert f"settled on version {version}" in refusal


@given(st.text(max_size=200), st.integers(0, 2**16))
def test_any_software_string_is_read_or_refused_cleanly(software, version) -> None:
    hello = Hello(protocol_version=version, listen_address="", software=software)
    try:
        spoken = spoken_by(hello)
    except RemoteProtocolError:
        return
    assert 0 < len(spoken) <= MAX_OFFERED and min(spoken) == version


@pytest.mark.parametrize(
    "software",
    [
        "p wire=2,3 wire=2,3",
        "p wire=" + ",".join(map(str, range(2, 12))),
        "p wire=2,x",
        "p wire=3,4",
        "p wire=2,99999999999999999999",
        "p wire=2,٣",
    ],
)
def test_malformed_offers_are_refused(software) -> None:
    with pytest.raises(RemoteProtocolError):
        spoken_by(Hello(protocol_version=2, listen_address="", software=software))


def test_every_record_kind_and_entry_op_newer_than_version_2_is_marked_so() -> None:
    """Version 2 knew record kinds 1-3 and bucket entry ops 1-4 (aa5ebdb); a newer one not in
    the tables would be sent to a version-2 peer, which refuses it."""
    from p2pstore.core.bucket_entries import Op
    from p2pstore.core.records import RecordKind
    from p2pstore.wire.versions import ENTRY_OP_SINCE, RECORD_KIND_SINCE

    assert {int(k) for k in RecordKind} - {1, 2, 3} == set(RECORD_KIND_SINCE)
    assert {int(op) for op in Op} - {1, 2, 3, 4} == set(ENTRY_OP_SINCE)
