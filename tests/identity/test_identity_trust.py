"""TrustAnchor.verify: who is admitted, who is refused and why."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.errors import IdentityError, PeerRefused
from p2pstore.identity import (
    CLOCK_SKEW,
    MeshCA,
    Role,
    TrustAnchor,
    identity_from_certificate,
    node_id_from_public_key,
    validate_datacenter,
    validate_region,
)
from p2pstore.identity.profile import authority_key_identifier

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CA_KEY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
CA = MeshCA.create_in_memory(mesh_name="grand-est", now=NOW, key=CA_KEY)
ANCHOR = CA.trust_anchor()


def refused(anchor, cert, now=NOW):
    with pytest.raises(PeerRefused) as caught:
        anchor.verify(cert, now)
    return caught.value


def test_issue_verify_round_trip():
    creds = CA.issue_in_memory(datacenter="strasbourg-1", region="FR-GES", now=NOW)
    identity = ANCHOR.verify(creds.certificate, NOW)
    raw_key = creds.public_key_bytes()
    assert identity.node_id == hashlib.sha256(raw_key).digest()[:20]
    assert identity.datacenter == "strasbourg-1"
    assert identity.region == "FR-GES"
    assert identity.role is Role.NODE
    assert identity.serial == creds.certificate.serial_number
    assert identity.not_before == NOW - CLOCK_SKEW
    assert identity.not_after == NOW + timedelta(days=365)
    assert identity.not_after.tzinfo is not None
    assert identity == creds.identity
    assert ANCHOR.verify_der(creds.certificate_der(), NOW) == identity
    assert identity.describe() == f"node {identity.node_id.hex()[:8]} (strasbourg-1, FR-GES)"


def test_client_role_is_parsed_from_extended_key_usage():
    creds = CA.issue_in_memory(datacenter="laptop", region="FR", role=Role.CLIENT, now=NOW)
    eku = creds.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ANCHOR.verify(creds.certificate, NOW).role is Role.CLIENT
    node = CA.issue_in_memory(datacenter="dc", region="FR", now=NOW)
    eku = node.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_certificate_of_another_ca_is_wrong_ca_even_with_the_same_mesh_name():
    other = MeshCA.create_in_memory(mesh_name="grand-est", now=NOW)
    assert other.certificate.subject == CA.certificate.subject
    creds = other.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
    error = refused(ANCHOR, creds.certificate)
    assert error.reason == "wrong-ca"
    assert "not signed by this mesh's CA" in str(error)
    other_mesh = MeshCA.create_in_memory(mesh_name="bretagne", now=NOW)
    creds = other_mesh.issue_in_memory(datacenter="dc-1", region="FR-BRE", now=NOW)
    assert refused(ANCHOR, creds.certificate).reason == "wrong-ca"


def test_expiry_is_inclusive_of_not_after_and_refused_after():
    creds = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW, valid_days=10)
    end = NOW + timedelta(days=10)
    assert ANCHOR.verify(creds.certificate, end).serial == creds.identity.serial
    error = refused(ANCHOR, creds.certificate, end + timedelta(seconds=1))
    assert error.reason == "expired"
    message = str(error)
    assert creds.node_id.hex()[:8] in message
    assert "dc-1, FR-GES" in message
    assert "ask the mesh CA for a new one" in message


def test_not_yet_valid_outside_clock_skew_allowance():
    creds = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
    assert ANCHOR.verify(creds.certificate, NOW - timedelta(minutes=4)) == creds.identity
    error = refused(ANCHOR, creds.certificate, NOW - timedelta(minutes=6))
    assert error.reason == "not-yet-valid"
    assert "clock" in str(error)


def test_expired_mesh_ca_refuses_everyone():
    short_ca = MeshCA.create_in_memory(mesh_name="short", now=NOW, valid_days=30)
    creds = short_ca.issue_in_memory(datacenter="dc", region="FR", now=NOW, valid_days=30)
    anchor = short_ca.trust_anchor()
    assert anchor.verify(creds.certificate, NOW + timedelta(days=29)) == creds.identity
    error = refused(anchor, creds.certificate, NOW + timedelta(days=31))
    assert error.reason == "expired"
    assert "mesh CA certificate expired" in str(error)


def test_revoked_in_memory():
    ca = MeshCA.create_in_memory(mesh_name="m", now=NOW)
    victim = ca.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
    bystander = ca.issue_in_memory(datacenter="dc-2", region="FR-GES", now=NOW)
    before = ca.trust_anchor()
    crl = ca.revoke_in_memory(victim.identity.serial, now=NOW, reason="keyCompromise")
    assert before.verify(victim.certificate, NOW) == victim.identity  # a snapshot
    after = TrustAnchor.from_objects(ca.certificate, crl)
    error = refused(after, victim.certificate)
    assert error.reason == "revoked"
    assert str(victim.identity.serial) in str(error)
    assert after.verify(bystander.certificate, NOW) == bystander.identity


def test_crl_signed_by_another_ca_is_refused():
    other = MeshCA.create_in_memory(mesh_name="grand-est", now=NOW)
    with pytest.raises(IdentityError, match="not signed by the mesh CA"):
        TrustAnchor.from_objects(CA.certificate, other.revocation_list())


@pytest.mark.parametrize("der", [b"", b"garbage", b"\x30\x82\x01\x00" + b"\x00" * 16])
def test_garbage_der_is_malformed(der):
    with pytest.raises(PeerRefused) as caught:
        ANCHOR.verify_der(der, NOW)
    assert caught.value.reason == "malformed-certificate"


def test_truncated_der_is_malformed():
    der = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW).certificate_der()
    with pytest.raises(PeerRefused) as caught:
        ANCHOR.verify_der(der[:-10], NOW)
    assert caught.value.reason == "malformed-certificate"


def test_edited_datacenter_breaks_the_signature():
    der = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW).certificate_der()
    assert der.count(b"dc-1") == 1
    forged = der.replace(b"dc-1", b"dc-9")
    assert (
        x509.load_der_x509_certificate(forged).subject
        != x509.load_der_x509_certificate(der).subject
    )
    with pytest.raises(PeerRefused) as caught:
        ANCHOR.verify_der(forged, NOW)
    assert caught.value.reason == "wrong-ca"


def test_flipped_signature_byte_is_refused():
    der = bytearray(CA.issue_in_memory(datacenter="dc", region="FR", now=NOW).certificate_der())
    der[-1] ^= 0x01  # last byte of the Ed25519 signature
    with pytest.raises(PeerRefused) as caught:
        ANCHOR.verify_der(bytes(der), NOW)
    assert caught.value.reason == "wrong-ca"


def _hand_built(public_key, *, cn, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,), ca=False):
    """A certificate signed by the real CA key but not following the profile."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "FR-GES"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "grand-est"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "dc-1"),
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                ]
            )
        )
        .issuer_name(CA.certificate.subject)
        .public_key(public_key)
        .serial_number(12345)
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(authority_key_identifier(CA.certificate), critical=False)
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return builder.sign(CA_KEY, algorithm=None)


def test_common_name_not_matching_the_key_is_malformed():
    victim = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
    attacker_key = Ed25519PrivateKey.generate().public_key()
    cert = _hand_built(attacker_key, cn=victim.node_id.hex())
    error = refused(ANCHOR, cert)
    assert error.reason == "malformed-certificate"
    assert "is not the node id" in str(error)


def test_hand_built_certificate_following_the_profile_is_accepted():
    # The control for the malformed cases below: only the deliberate defect differs.
    key = Ed25519PrivateKey.generate().public_key()
    cert = _hand_built(key, cn=node_id_from_public_key(key).hex())
    assert ANCHOR.verify(cert, NOW).role is Role.CLIENT


def test_missing_extended_key_usage_is_malformed():
    key = Ed25519PrivateKey.generate().public_key()
    cert = _hand_built(key, cn=node_id_from_public_key(key).hex(), eku=())
    assert refused(ANCHOR, cert).reason == "malformed-certificate"


def test_non_ed25519_key_is_malformed():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = _hand_built(key, cn="00" * 20)
    error = refused(ANCHOR, cert)
    assert error.reason == "malformed-certificate"
    assert "Ed25519" in str(error)


def test_ca_certificate_presented_as_peer_is_malformed():
    assert refused(ANCHOR, CA.certificate).reason == "malformed-certificate"


def test_naive_now_is_a_caller_bug():
    creds = CA.issue_in_memory(datacenter="dc", region="FR", now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        ANCHOR.verify(creds.certificate, NOW.replace(tzinfo=None))


def test_identity_from_certificate_makes_no_trust_decision():
    other = MeshCA.create_in_memory(mesh_name="elsewhere", now=NOW)
    creds = other.issue_in_memory(datacenter="dc", region="DE-BW", now=NOW, valid_days=1)
    identity = identity_from_certificate(creds.certificate)
    assert identity.region == "DE-BW"


def test_same_key_serial_and_time_give_identical_certificates():
    key = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)
    a = CA.issue_in_memory(datacenter="dc", region="FR", now=NOW, key=key, serial=777)
    b = MeshCA.create_in_memory(mesh_name="grand-est", now=NOW, key=CA_KEY)
    b_creds = b.issue_in_memory(datacenter="dc", region="FR", now=NOW, key=key, serial=777)
    assert a.certificate_der() == b_creds.certificate_der()


@pytest.mark.parametrize("code", ["fr-ges", "FRA", "F", "FR-", "FR-GESX", "FR_GES", "", "FR-GES\n"])
def test_invalid_region_rejected_with_clear_message(code):
    with pytest.raises(IdentityError) as caught:
        validate_region(code)
    assert repr(code) in str(caught.value)
    assert "FR-GES" in str(caught.value)
    with pytest.raises(IdentityError):
        CA.issue_in_memory(datacenter="dc", region=code, now=NOW)


def test_lowercase_region_gets_a_suggestion():
    with pytest.raises(IdentityError, match="did you mean 'FR-GES'"):
        validate_region("fr-ges")


@pytest.mark.parametrize("name", ["", "a" * 65, "dc 1", "dc/1", "dc,1", "dé", "dc\n"])
def test_invalid_datacenter_rejected_with_clear_message(name):
    with pytest.raises(IdentityError) as caught:
        validate_datacenter(name)
    assert repr(name) in str(caught.value)
    with pytest.raises(IdentityError):
        CA.issue_in_memory(datacenter=name, region="FR", now=NOW)


@settings(max_examples=30, deadline=None)
@given(
    datacenter=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    region=st.from_regex(r"[A-Z]{2}(-[A-Z0-9]{1,3})?", fullmatch=True),
    role=st.sampled_from(Role),
    valid_days=st.integers(min_value=1, max_value=3000),
)
def test_any_valid_datacenter_and_region_round_trip(datacenter, region, role, valid_days):
    creds = CA.issue_in_memory(
        datacenter=datacenter, region=region, role=role, now=NOW, valid_days=valid_days
    )
    identity = ANCHOR.verify_der(creds.certificate_der(), NOW)
    assert (identity.datacenter, identity.region, identity.role) == (datacenter, region, role)
    assert identity.node_id == creds.node_id
    pem = creds.certificate.public_bytes(serialization.Encoding.PEM)
    assert identity_from_certificate(x509.load_pem_x509_certificate(pem)) == identity
