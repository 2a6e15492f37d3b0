"""Bucket keys: tokens hide names from replicas, payloads open only with the tenant's key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.codec.bucket_keys import (
    MAX_NAME_BYTES,
    BucketKeys,
    EntryPayload,
    validate_bucket_name,
    validate_object_name,
)
from p2pstore.errors import IntegrityError, LocalProtocolError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SALT = b"s" * 16
names = st.text(
    st.characters(exclude_characters="\0", exclude_categories=("Cs",)), min_size=1, max_size=200
)


def test_tokens_are_deterministic_per_bucket_and_differ_across_buckets_and_tenants():
    photos = BucketKeys(KEY, "photos")
    assert photos.name_token("a.txt") == BucketKeys(KEY, "photos").name_token("a.txt")
    assert photos.name_token("a.txt") != BucketKeys(KEY, "archives").name_token("a.txt")
    assert photos.name_token("a.txt") != BucketKeys(OTHER_KEY, "photos").name_token("a.txt")
    assert photos.bucket_token != BucketKeys(KEY, "archives").bucket_token
    assert BucketKeys.root(KEY).bucket_token not in {photos.bucket_token}


@given(names, st.integers(0, 2**40), st.text(max_size=50))
def test_a_sealed_payload_opens_back_and_hides_the_name(name, size, value):
    keys = BucketKeys(KEY, "photos")
    payload = EntryPayload(name, "cap:xyz", size, 1234, (("colour", value),))
    sealed = keys.seal(payload, op=1, salt=SALT)
    assert name.encode() not in sealed or len(name.encode()) < 4
    assert keys.open(sealed, name_token=keys.name_token(name), op=1) == payload


def test_a_payload_does_not_open_with_another_key_token_or_op():
    keys = BucketKeys(KEY, "photos")
    sealed = keys.seal(EntryPayload("a.txt", "cap"), op=1, salt=SALT)
    token = keys.name_token("a.txt")
    for opener, name_token, op in [
        (BucketKeys(OTHER_KEY, "photos"), token, 1),
        (BucketKeys(KEY, "archives"), token, 1),
        (keys, keys.name_token("b.txt"), 1),
        (keys, token, 2),
    ]:
        with pytest.raises(IntegrityError):
            opener.open(sealed, name_token=name_token, op=op)
    with pytest.raises(IntegrityError):
        keys.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), name_token=token, op=1)


@given(st.binary(max_size=300))
def test_garbage_never_opens_and_never_crashes(data):
    keys = BucketKeys(KEY, "photos")
    with pytest.raises(IntegrityError):
        keys.open(data, name_token=keys.name_token("a"), op=1)


def test_sizes_are_bounded():
    with pytest.raises(LocalProtocolError):
        validate_object_name("x" * (MAX_NAME_BYTES + 1))
    with pytest.raises(LocalProtocolError):
        EntryPayload("a", metadata=(("k", "v" * 3000),))
    with pytest.raises(LocalProtocolError):
        BucketKeys(b"short", "photos")
    with pytest.raises(LocalProtocolError):
        BucketKeys(KEY, "photos").seal(EntryPayload("a"), op=1, salt=b"short")


@pytest.mark.parametrize("name", ["ab", "-abc", "abc-", "ABC", "a_b_c", "a" * 64, "\0root"])
def test_bad_bucket_names_are_refused(name):
    with pytest.raises(LocalProtocolError, match="bucket name"):
        validate_bucket_name(name)


@pytest.mark.parametrize("name", ["", "a\0b", "half a pair \ud800"])
def test_bad_object_names_are_refused(name):
    with pytest.raises(LocalProtocolError):
        validate_object_name(name)
