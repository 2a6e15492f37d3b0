"""Capabilities: string round trips, verify cap derivation, key never in repr, bad inputs."""

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.codec import CapabilityError, ReadCap, VerifyCap, parse_capability
from p2pstore.errors import LocalProtocolError

ids = st.binary(min_size=32, max_size=32)

OID = bytes(range(32))
KEY = bytes(range(100, 132))


def _b32(b):
    return base64.b32encode(b).decode().rstrip("=").lower()


@given(object_id=ids, key=ids)
def test_read_cap_round_trip(object_id, key):
    cap = ReadCap(object_id, key)
    text = cap.to_string()
    assert text == f"p2ps:read:{_b32(object_id)}:{_b32(key)}"
    assert parse_capability(text) == cap
    assert ReadCap.parse(text.upper()) == cap
    assert parse_capability(f"  {text}\n") == cap


@given(object_id=ids)
def test_verify_cap_round_trip(object_id):
    cap = VerifyCap(object_id)
    assert str(cap) == cap.to_string() == f"p2ps:verify:{_b32(object_id)}"
    assert VerifyCap.parse(cap.to_string()) == cap


def test_read_cap_derives_verify_cap():
    cap = ReadCap(OID, KEY)
    verify = cap.verify_cap()
    assert verify == VerifyCap(OID)
    assert _b32(KEY) not in verify.to_string()


def test_read_cap_never_prints_its_key():
    cap = ReadCap(OID, KEY)
    for text in (repr(cap), str(cap), f"{cap}", repr([cap])):
        assert _b32(KEY) not in text
        assert KEY.hex() not in text
        assert repr(KEY) not in text
    assert _b32(KEY) in cap.to_string()


def test_a_read_cap_is_not_a_verify_cap_and_back():
    with pytest.raises(CapabilityError, match="verify cap"):
        ReadCap.parse(VerifyCap(OID).to_string())
    with pytest.raises(CapabilityError, match="read cap"):
        VerifyCap.parse(ReadCap(OID, KEY).to_string())


GOOD_ID, GOOD_KEY = _b32(OID), _b32(KEY)
NON_CANONICAL_ID = GOOD_ID[:-1] + "b"  # last char carries 4 unused bits


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "starts with"),
        ("http://x", "starts with"),
        (f"tahoe:read:{GOOD_ID}:{GOOD_KEY}", "starts with"),
        ("p2ps", "unknown capability kind"),
        (f"p2ps:write:{GOOD_ID}", "unknown capability kind"),
        (f"p2ps:read:{GOOD_ID}", "p2ps:read:<object id>:<key>"),
        (f"p2ps:read:{GOOD_ID}:{GOOD_KEY}:extra", "p2ps:read:<object id>:<key>"),
        (f"p2ps:verify:{GOOD_ID}:{GOOD_KEY}", "p2ps:verify:<object id>"),
        (f"p2ps:verify:{GOOD_ID[:-1]}", "object id .* 52 base32 characters"),
        (f"p2ps:read:{GOOD_ID}:{GOOD_KEY}a", "key .* 52 base32 characters"),
        (f"p2ps:verify:{GOOD_ID[:-1]}1", "object id .* not base32"),
        (f"p2ps:read:{GOOD_ID}:{GOOD_KEY[:-1]}=", "key .* not base32"),
        (f"p2ps:verify:{NON_CANONICAL_ID}", "not canonical"),
        (f"p2ps:verify:{GOOD_ID[:-1]}\u0131", "object id"),  # dotless i upper-cases to I
        ("p2ps:verify:" + "a" * 300, "at most"),
    ],
)
def test_bad_capability_strings_name_what_is_wrong(text, complaint):
    with pytest.raises(CapabilityError, match=complaint):
        parse_capability(text)


def test_capability_errors_are_local_protocol_errors():
    assert issubclass(CapabilityError, LocalProtocolError)
    with pytest.raises(CapabilityError):
        parse_capability(b"p2ps:verify:x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("object_id", "key"), [(b"x" * 31, KEY), (OID, b"k" * 33), (OID, "k" * 32)]
)
def test_caps_validate_their_bytes(object_id, key):
    with pytest.raises(CapabilityError):
        ReadCap(object_id, key)
