"""Signed records: what is accepted, what is refused and why, for every kind and publisher."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.announcements import Announcement, decode_announcement
from p2pstore.core.records import (
    MAX_SKEW,
    MEMBER_KINDS,
    RULES,
    RecordKind,
    RecordRejected,
    RejectReason,
    manifest_key,
    renew,
    sign_record,
    signed_bytes,
    verify_record,
)
from p2pstore.errors import LocalProtocolError, RemoteProtocolError
from p2pstore.identity import MeshCA, Role, TrustAnchor, node_id_from_public_key
from p2pstore.wire import (
    Envelope,
    Kind,
    Reference,
    SignedRecord,
    Store,
    decode_envelope,
    encode_envelope,
)
from p2pstore.wire.leases import encode_references

T0 = 1_772_366_400  # 2026-03-01 12:00 UTC
NOW_DT = datetime.fromtimestamp(T0, UTC)
ISSUED = NOW_DT - timedelta(days=30)  # the round-trip property moves `now` by up to 12 days
CA = MeshCA.create_in_memory(mesh_name="grand-est", now=ISSUED)
TRUST = CA.trust_anchor()
NODE = CA.issue_in_memory(datacenter="strasbourg-1", region="FR-GES", now=ISSUED)
NEIGHBOUR = CA.issue_in_memory(datacenter="metz-2", region="FR-GES", now=ISSUED)
KEY = CA.issue_in_memory(
    datacenter="laptop",
    region="FR",
    role=Role.CLIENT,
    now=ISSUED,
    key=Ed25519PrivateKey.from_private_bytes(b"\x07" * 32),
)
"""A client: records of every kind but announcements come from clients as well as nodes."""
PLACEMENT_KEY = hashlib.sha256(b"some object").digest()[:20]


def announcement(creds=NODE, **changes):
    fields = {
        "address": "10.0.0.7:7400",
        "datacenter": creds.identity.datacenter,
        "region": creds.identity.region,
        "free_bytes": 5 << 40,
        "certificate_der": creds.certificate_der(),
    }
    return Announcement(**{**fields, **changes})


def forge(
    creds, kind, key, value, *, sequence=1, expires_at=T0 + 600, private_key=None, certificate=None
):
    """A correctly signed record that sign_record would refuse to make: by ``creds`` (its key
    and certificate), or by ``private_key`` carrying ``certificate`` (any bytes)."""
    private_key = creds.private_key if private_key is None else private_key
    certificate = creds.certificate_der() if certificate is None else certificate
    public = private_key.public_key().public_bytes_raw()
    data = signed_bytes(
        kind,
        key,
        value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=public,
        certificate=certificate,
    )
    return SignedRecord(
        kind=int(kind),
        key=key,
        value=value,
        sequence=sequence,
        expires_at=expires_at,
        publisher_key=public,
        certificate=certificate,
        signature=private_key.sign(data),
    )


def rejected(record, now=T0, trust=TRUST):
    with pytest.raises(RecordRejected) as caught:
        verify_record(record, now, trust=trust)
    return caught.value


REFERENCED = hashlib.sha256(b"a referenced object").digest()


def references_value(object_id=REFERENCED) -> bytes:
    """A REFERENCES value (holders check its shape and key; readers verify each reference)."""
    reference = Reference(
        object_id=object_id,
        tenant="acme",
        bucket_token=b"b" * 32,
        name=b"n" * 32,
        version=b"v" * 16,
        issued_ms=5,
        expires_ms=0,
        signer_key=b"k" * 32,
        certificate=b"c" * 600,
        signature=b"s" * 64,
    )
    return encode_references((reference,))


def good_record(kind, value=b"x" * 100, sequence=5, ttl=600):
    if kind is RecordKind.REFERENCES:
        key, value = manifest_key(REFERENCED), references_value()
    elif kind is RecordKind.MANIFEST:
        key = manifest_key(hashlib.sha256(value).digest())
    elif kind is RecordKind.PLACEMENT:
        key = PLACEMENT_KEY
    else:
        key, value = NODE.node_id, announcement().encode()
    return sign_record(NODE, kind, key, value, sequence=sequence, expires_at=T0 + ttl)


# -- round trips ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from([RecordKind.MANIFEST, RecordKind.PLACEMENT]),
    value=st.binary(min_size=1, max_size=2000),
    sequence=st.integers(0, (1 << 64) - 1),
    ttl=st.integers(1, 7 * 86400),
    now=st.floats(T0 - 1e6, T0 + 1e6),
)
def test_sign_then_verify_round_trips_for_content_kinds(kind, value, sequence, ttl, now):
    key = hashlib.sha256(value).digest()[:20] if kind is RecordKind.MANIFEST else PLACEMENT_KEY
    expires_at = int(now) + ttl
    record = sign_record(KEY, kind, key, value, sequence=sequence, expires_at=expires_at)
    info = verify_record(record, now, trust=TRUST)
    assert info.kind is kind
    assert info.key == key
    assert info.publisher == node_id_from_public_key(KEY.private_key.public_key())
    assert info.certificate == KEY.identity
    assert (info.sequence, info.expires_at) == (sequence, expires_at)
    assert info.announcement is None


def test_announcement_round_trips_with_what_its_certificate_proves():
    record = good_record(RecordKind.ANNOUNCEMENT)
    info = verify_record(record, T0, trust=TRUST)
    assert info.publisher == NODE.node_id
    assert info.announcement == announcement()
    assert info.certificate.node_id == NODE.node_id
    assert (info.certificate.datacenter, info.certificate.region) == ("strasbourg-1", "FR-GES")


@pytest.mark.parametrize("kind", list(MEMBER_KINDS))
def test_a_record_survives_the_wire(kind):
    record = good_record(kind)
    payload = encode_envelope(Envelope(Kind.REQUEST, 1, Store(record=record)))
    decoded = decode_envelope(payload).message.record
    assert decoded == record
    assert verify_record(decoded, T0, trust=TRUST).publisher == NODE.node_id


# -- any alteration is refused -------------------------------------------------------------

FIELDS = {
    "kind": 8,
    "key": 160,
    "value": None,
    "sequence": 64,
    "expires_at": 64,
    "publisher_key": 256,
    "certificate": None,
    "signature": 512,
}


def flip(record, field, bit):
    old = getattr(record, field)
    if isinstance(old, int):
        return dataclasses.replace(record, **{field: old ^ (1 << bit)})
    data = bytearray(old)
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    return dataclasses.replace(record, **{field: bytes(data)})


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(list(MEMBER_KINDS)),
    field=st.sampled_from(sorted(FIELDS)),
    bit=st.integers(0, 1 << 16),
)
def test_any_flipped_bit_is_refused(kind, field, bit):
    record = good_record(kind)
    width = FIELDS[field] or 8 * len(getattr(record, field))
    altered = flip(record, field, bit % width)
    assert altered != record
    reason = rejected(altered).reason
    assert reason in set(RejectReason) - {
        RejectReason.STALE,
        RejectReason.FULL,
        RejectReason.OVER_QUOTA,
    }


# -- time, size, kind ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MEMBER_KINDS))
def test_expiry_is_exclusive_and_the_future_is_bounded(kind):
    longest = RULES[kind].max_ttl + MAX_SKEW
    assert verify_record(good_record(kind, ttl=longest), T0, trust=TRUST)
    assert verify_record(good_record(kind, ttl=1), T0, trust=TRUST)
    assert rejected(good_record(kind, ttl=0)).reason is RejectReason.EXPIRED
    assert rejected(good_record(kind, ttl=-5)).reason is RejectReason.EXPIRED
    far = rejected(good_record(kind, ttl=longest + 1))
    assert far.reason is RejectReason.TOO_FAR_IN_FUTURE
    assert "clock" in str(far)
    later = good_record(kind, ttl=600)
    assert rejected(later, now=T0 + 600).reason is RejectReason.EXPIRED
    assert verify_record(later, T0 + 599.5, trust=TRUST)


def test_announcements_live_an_hour_and_manifests_longest():
    assert RULES[RecordKind.ANNOUNCEMENT].max_ttl == 3600
    for rules in RULES.values():
        assert rules.republish_every * 4 <= rules.max_ttl
    assert RULES[RecordKind.MANIFEST].max_value == 8 * 1024 * 1024


@pytest.mark.parametrize("kind", [RecordKind.PLACEMENT, RecordKind.ANNOUNCEMENT])
def test_oversized_values_are_neither_signed_nor_accepted(kind):
    limit = RULES[kind].max_value
    key = NODE.node_id if kind is RecordKind.ANNOUNCEMENT else PLACEMENT_KEY
    with pytest.raises(LocalProtocolError, match="at most"):
        sign_record(NODE, kind, key, b"\0" * (limit + 1), sequence=1, expires_at=T0 + 60)
    big = forge(NODE, kind, key, b"\0" * (limit + 1))
    assert rejected(big).reason is RejectReason.TOO_LARGE


def test_a_placement_at_its_size_limit_is_accepted():
    limit = RULES[RecordKind.PLACEMENT].max_value
    record = sign_record(
        KEY, RecordKind.PLACEMENT, PLACEMENT_KEY, b"\1" * limit, sequence=1, expires_at=T0 + 60
    )
    assert verify_record(record, T0, trust=TRUST).kind is RecordKind.PLACEMENT


@pytest.mark.parametrize("kind", [0, 7, 17, 255])
def test_unknown_kinds_are_refused(kind):
    with pytest.raises(LocalProtocolError, match="unknown"):
        sign_record(KEY, kind, PLACEMENT_KEY, b"v", sequence=1, expires_at=T0 + 60)
    assert rejected(forge(KEY, kind, PLACEMENT_KEY, b"v")).reason is RejectReason.UNKNOWN_KIND


# -- key rules -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(value=st.binary(min_size=1, max_size=500), other=st.binary(min_size=1, max_size=500))
def test_a_manifest_is_accepted_only_under_its_own_object_id(value, other):
    object_id = hashlib.sha256(value).digest()
    key = manifest_key(object_id)
    assert key == object_id[:20]
    record = sign_record(KEY, RecordKind.MANIFEST, key, value, sequence=1, expires_at=T0 + 60)
    assert verify_record(record, T0, trust=TRUST).key == key
    if hashlib.sha256(other).digest()[:20] != key:
        with pytest.raises(LocalProtocolError, match="hashes to"):
            sign_record(KEY, RecordKind.MANIFEST, key, other, sequence=1, expires_at=T0 + 60)
        assert rejected(forge(KEY, RecordKind.MANIFEST, key, other)).reason is RejectReason.BAD_KEY


def test_references_are_accepted_only_under_the_key_of_the_object_they_name():
    record = good_record(RecordKind.REFERENCES)
    assert verify_record(record, T0, trust=TRUST).kind is RecordKind.REFERENCES
    other = references_value(hashlib.sha256(b"another object").digest())
    assert rejected(forge(NODE, RecordKind.REFERENCES, record.key, other)).reason is (
        RejectReason.BAD_KEY
    )
    for junk in (b"", b"\x91\x90", b"not msgpack", encode_references(())):
        assert rejected(forge(NODE, RecordKind.REFERENCES, record.key, junk)).reason is (
            RejectReason.BAD_VALUE
        )


def test_an_empty_manifest_is_refused():
    key = hashlib.sha256(b"").digest()[:20]
    assert rejected(forge(KEY, RecordKind.MANIFEST, key, b"")).reason is RejectReason.BAD_VALUE


def test_manifest_key_needs_an_object_id():
    with pytest.raises(LocalProtocolError):
        manifest_key(b"short")


def test_a_node_announces_only_itself():
    value = announcement().encode()
    with pytest.raises(LocalProtocolError, match="only itself"):
        sign_record(NODE, RecordKind.ANNOUNCEMENT, PLACEMENT_KEY, value, sequence=1, expires_at=T0)
    wrong_key = forge(NODE, RecordKind.ANNOUNCEMENT, NEIGHBOUR.node_id, value)
    assert rejected(wrong_key).reason is RejectReason.BAD_KEY


# -- publishers must be members of the mesh ------------------------------------------------

THROWAWAY = Ed25519PrivateKey.from_private_bytes(b"\x66" * 32)
OTHER_MESH = MeshCA.create_in_memory(mesh_name="grand-est", now=ISSUED)


def content(kind, publisher_id):
    """A value and key that pass the kind's own rules for ``publisher_id``."""
    if kind is RecordKind.MANIFEST:
        return manifest_key(hashlib.sha256(b"junk").digest()), b"junk"
    if kind is RecordKind.ANNOUNCEMENT:
        return publisher_id, announcement().encode()
    if kind is RecordKind.REFERENCES:
        return manifest_key(REFERENCED), references_value()
    return PLACEMENT_KEY, b"every share on a node that holds nothing"


@pytest.mark.parametrize("kind", list(MEMBER_KINDS))
@pytest.mark.parametrize(
    "certificate",
    ["garbage", "someone-elses", "other-mesh", "own-key-other-mesh"],
)
def test_a_record_signed_by_a_throwaway_key_is_refused(kind, certificate):
    """The attack of issue 13: a key with no certificate behind it signs a record (a
    placement at sequence 2**62); whatever certificate it carries, no holder takes it."""
    der = {
        "garbage": b"\x30\x03\x02\x01\x01",
        "someone-elses": NODE.certificate_der(),
        "other-mesh": OTHER_MESH.issue_in_memory(
            datacenter="dc-1", region="FR-GES", now=ISSUED
        ).certificate_der(),
        "own-key-other-mesh": OTHER_MESH.issue_in_memory(
            datacenter="dc-1", region="FR-GES", now=ISSUED, key=THROWAWAY
        ).certificate_der(),
    }[certificate]
    publisher = node_id_from_public_key(THROWAWAY.public_key())
    key, value = content(kind, publisher)
    record = forge(NODE, kind, key, value, sequence=1 << 62, private_key=THROWAWAY, certificate=der)
    error = rejected(record)
    assert error.reason is RejectReason.UNCERTIFIED
    assert error.sender_at_fault
    assert "certificate" in str(error)


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(list(MEMBER_KINDS)),
    certificate=st.binary(min_size=1, max_size=4096),
    sequence=st.integers(0, (1 << 64) - 1),
)
def test_no_certificate_bytes_make_a_throwaway_key_a_publisher(kind, certificate, sequence):
    publisher = node_id_from_public_key(THROWAWAY.public_key())
    key, value = content(kind, publisher)
    record = forge(
        NODE, kind, key, value, sequence=sequence, private_key=THROWAWAY, certificate=certificate
    )
    assert rejected(record).reason is RejectReason.UNCERTIFIED


def test_a_member_s_record_carries_its_certificate_under_its_signature():
    record = good_record(RecordKind.PLACEMENT)
    assert record.certificate == NODE.certificate_der()
    swapped = dataclasses.replace(record, certificate=NEIGHBOUR.certificate_der())
    assert rejected(swapped).reason is RejectReason.BAD_SIGNATURE
    renewed_elsewhere = CA.issue_in_memory(
        datacenter="strasbourg-1", region="FR-GES", now=ISSUED, key=NODE.private_key
    )
    resigned = renew(record, renewed_elsewhere, T0)  # a renewed certificate, same key
    info = verify_record(resigned, T0, trust=TRUST)
    assert info.certificate.serial == renewed_elsewhere.identity.serial != NODE.identity.serial


def test_a_client_publishes_manifests_and_placements():
    for kind in (RecordKind.MANIFEST, RecordKind.PLACEMENT):
        key, value = content(kind, KEY.node_id)
        record = sign_record(KEY, kind, key, value, sequence=1, expires_at=T0 + 60)
        assert verify_record(record, T0, trust=TRUST).certificate.role is Role.CLIENT


# -- announcements against the mesh CA -----------------------------------------------------


def announce(creds, value):
    return sign_record(
        creds, RecordKind.ANNOUNCEMENT, creds.node_id, value, sequence=1, expires_at=T0 + 600
    )


def test_an_announcement_claiming_another_region_is_refused():
    error = rejected(announce(NODE, announcement(region="FR-IDF").encode()))
    assert error.reason is RejectReason.BAD_VALUE
    assert error.sender_at_fault
    assert "claims region FR-IDF but its certificate says FR-GES" in str(error)


def test_an_announcement_claiming_another_datacenter_is_refused():
    error = rejected(announce(NODE, announcement(datacenter="metz-2").encode()))
    assert "claims datacenter metz-2 but its certificate says strasbourg-1" in str(error)


def test_an_announcement_with_another_nodes_certificate_is_refused():
    value = announcement(NEIGHBOUR, datacenter="strasbourg-1").encode()
    with pytest.raises(LocalProtocolError, match="another certificate"):
        announce(NODE, value)
    error = rejected(forge(NODE, RecordKind.ANNOUNCEMENT, NODE.node_id, value))
    assert error.reason is RejectReason.BAD_VALUE
    assert "certificate of node" in str(error)
    # Its own certificate in the value, the neighbour's on the record: the record's is refused.
    mixed = forge(
        NODE,
        RecordKind.ANNOUNCEMENT,
        NODE.node_id,
        announcement().encode(),
        certificate=NEIGHBOUR.certificate_der(),
    )
    assert rejected(mixed).reason is RejectReason.UNCERTIFIED


def test_an_announcement_certified_by_another_mesh_is_refused():
    other_ca = MeshCA.create_in_memory(mesh_name="grand-est", now=ISSUED)
    impostor = other_ca.issue_in_memory(datacenter="strasbourg-1", region="FR-GES", now=ISSUED)
    error = rejected(announce(impostor, announcement(impostor).encode()))
    assert error.reason is RejectReason.UNCERTIFIED
    assert "wrong-ca" in str(error)
    assert verify_record(
        announce(impostor, announcement(impostor).encode()), T0, trust=other_ca.trust_anchor()
    )


def test_an_announcement_with_a_revoked_or_expired_certificate_is_refused():
    record = announce(NODE, announcement().encode())
    revoking = TrustAnchor(CA.certificate, frozenset({NODE.identity.serial}))
    error = rejected(record, trust=revoking)
    assert error.reason is RejectReason.REVOKED and "revoked" in str(error)
    assert not error.sender_at_fault  # its relay may not have reloaded its revocation list yet
    yesterday = NOW_DT - timedelta(days=1)
    short = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=yesterday, valid_days=1)
    late = T0 + 2 * 86400
    record = sign_record(
        short,
        RecordKind.ANNOUNCEMENT,
        short.node_id,
        announcement(short).encode(),
        sequence=1,
        expires_at=late + 60,
    )
    error = rejected(record, now=late)
    assert error.reason is RejectReason.UNCERTIFIED and "expired" in str(error)


def test_a_client_certificate_cannot_announce():
    value = announcement(KEY).encode()
    with pytest.raises(LocalProtocolError, match="only nodes"):
        announce(KEY, value)
    error = rejected(forge(KEY, RecordKind.ANNOUNCEMENT, KEY.node_id, value))
    assert error.reason is RejectReason.BAD_VALUE
    assert "client certificate" in str(error)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, "a:1", "dc", "FR", 1]),
        msgpack.packb([2, "a:1", "dc", "FR", 1, b"c"]),
        msgpack.packb({"address": "a:1"}),
        announcement().encode() + b"\0",
    ],
)
def test_a_malformed_announcement_is_refused(value):
    with pytest.raises(LocalProtocolError):
        announce(NODE, value)
    record = forge(NODE, RecordKind.ANNOUNCEMENT, NODE.node_id, value)
    assert rejected(record).reason is RejectReason.BAD_VALUE


def test_a_non_canonical_announcement_is_refused():
    fields = [1, "a:1", "dc-1", "FR", 5, b"cert"]
    canonical = msgpack.packb(fields)
    assert decode_announcement(canonical).free_bytes == 5
    padded = canonical.replace(b"\x05", b"\xcf" + (5).to_bytes(8, "big"))
    assert msgpack.unpackb(padded) == fields
    with pytest.raises(RemoteProtocolError, match="canonical"):
        decode_announcement(padded)


@settings(max_examples=60, deadline=None)
@given(
    address=st.text(min_size=1, max_size=40),
    datacenter=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    region=st.from_regex(r"[A-Z]{2}(-[A-Z0-9]{1,3})?", fullmatch=True),
    free_bytes=st.integers(0, (1 << 63) - 1),
    cert=st.binary(min_size=1, max_size=3072),
)
def test_announcement_encoding_round_trips(address, datacenter, region, free_bytes, cert):
    value = Announcement(address, datacenter, region, free_bytes, cert)
    assert decode_announcement(value.encode()) == value


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_decoding_garbage_raises_only_remote_protocol_error(data):
    try:
        value = decode_announcement(data)
    except RemoteProtocolError:
        return
    assert value.encode() == data


@pytest.mark.parametrize(
    "changes",
    [{"region": "fr-ges"}, {"datacenter": "no spaces"}, {"free_bytes": -1}, {"address": ""}],
)
def test_an_invalid_announcement_cannot_be_built(changes):
    with pytest.raises(LocalProtocolError):
        announcement(**changes)


# -- renewal and signers -------------------------------------------------------------------


def test_renew_keeps_sequence_and_value_and_extends_expiry():
    record = good_record(RecordKind.PLACEMENT, ttl=60)
    later = T0 + 50
    renewed = renew(record, NODE, later)
    assert (renewed.sequence, renewed.value, renewed.key) == (
        record.sequence,
        record.value,
        record.key,
    )
    assert renewed.expires_at == later + RULES[RecordKind.PLACEMENT].max_ttl
    assert verify_record(renewed, later, trust=TRUST).sequence == record.sequence
    assert renew(record, NODE, later, ttl=30).expires_at == later + 30


def test_only_the_publisher_renews_within_the_kinds_lifetime():
    record = good_record(RecordKind.PLACEMENT)
    with pytest.raises(LocalProtocolError, match="publisher"):
        renew(record, NEIGHBOUR, T0)
    for ttl in (0, -1, RULES[RecordKind.PLACEMENT].max_ttl + 1):
        with pytest.raises(LocalProtocolError, match="ttl"):
            renew(record, NODE, T0, ttl=ttl)


def test_a_bare_key_cannot_sign_a_record():
    with pytest.raises(LocalProtocolError, match="certificate"):
        sign_record(
            NODE.private_key, RecordKind.PLACEMENT, PLACEMENT_KEY, b"v", sequence=3, expires_at=T0
        )


def test_signatures_are_domain_separated():
    record = good_record(RecordKind.PLACEMENT)
    fields = dict(
        sequence=record.sequence,
        expires_at=record.expires_at,
        publisher_key=record.publisher_key,
        certificate=record.certificate,
    )
    data = signed_bytes(record.kind, record.key, record.value, **fields)
    assert data.startswith(b"p2pstore-record-v2\0")
    bare = NODE.private_key.sign(data[len(b"p2pstore-record-v2\0") :])
    assert (
        rejected(dataclasses.replace(record, signature=bare)).reason is RejectReason.BAD_SIGNATURE
    )
