import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import IdentityError
from p2pstore.identity import (
    NODE_ID_BYTES,
    node_id_from_bytes,
    node_id_from_public_key,
    parse_node_id,
    public_key_bytes,
    short_id,
)


def test_node_id_is_truncated_sha256_of_raw_public_key():
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    node_id = node_id_from_public_key(key)
    assert len(node_id) == NODE_ID_BYTES == 20
    assert node_id == hashlib.sha256(public_key_bytes(key)).digest()[:20]
    assert len(public_key_bytes(key)) == 32


def test_different_keys_give_different_ids():
    a = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key()
    b = Ed25519PrivateKey.from_private_bytes(b"\x02" * 32).public_key()
    assert node_id_from_public_key(a) != node_id_from_public_key(b)


@given(st.binary(min_size=20, max_size=20))
def test_parse_node_id_round_trips_hex(raw):
    assert parse_node_id(raw.hex()) == raw
    assert parse_node_id(raw.hex().upper()) == raw
    assert parse_node_id(f"  {raw.hex()}\n") == raw


@given(st.binary(min_size=20, max_size=20))
def test_short_id_is_hex_prefix(raw):
    assert short_id(raw) == raw.hex()[:8]
    assert raw.hex().startswith(short_id(raw))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "0" * 39,
        "0" * 41,
        "g" * 40,
        "0x" + "0" * 38,
        "00 " + "0" * 37,  # fromhex would accept inner spaces; a node id must not
    ],
)
def test_parse_node_id_rejects_bad_text_naming_it(text):
    with pytest.raises(IdentityError) as caught:
        parse_node_id(text)
    assert repr(text) in str(caught.value)


def test_node_id_from_bytes_checks_length():
    assert node_id_from_bytes(b"\x07" * 20) == b"\x07" * 20
    with pytest.raises(IdentityError, match="20 bytes, got 19"):
        node_id_from_bytes(b"\x07" * 19)
