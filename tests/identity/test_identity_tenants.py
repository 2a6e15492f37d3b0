"""Tenants: a client certificate names the institution it acts for, and only a client's may."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import IdentityError, PeerRefused
from p2pstore.identity import (
    TENANT_URI_PREFIX,
    MeshCA,
    Role,
    node_id_from_public_key,
    validate_tenant,
)
from p2pstore.identity.profile import authority_key_identifier

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
CA = MeshCA.create_in_memory(mesh_name="grand-est", now=NOW - timedelta(days=1))
TRUST = CA.trust_anchor()


def client(tenant: str | None) -> x509.Certificate:
    creds = CA.issue_in_memory(
        datacenter="laptop", region="FR", role=Role.CLIENT, now=NOW, tenant=tenant
    )
    return creds.certificate


def test_a_client_certificate_names_its_tenant_and_the_trust_anchor_reads_it():
    identity = TRUST.verify(client("univ-strasbourg"), NOW)
    assert identity.tenant == "univ-strasbourg"
    assert identity.role is Role.CLIENT


def test_a_certificate_without_tenant_acts_for_none():
    assert TRUST.verify(client(None), NOW).tenant is None
    node = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
    assert node.identity.tenant is None


def test_the_ca_refuses_to_give_a_node_a_tenant():
    with pytest.raises(IdentityError, match="client"):
        CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW, tenant="acme")


@pytest.mark.parametrize("name", ["", "a", "Acme", "-acme", "acme_1", "a" * 64, "acmé"])
def test_bad_tenant_names_are_refused_when_issuing(name):
    with pytest.raises(IdentityError, match="tenant"):
        CA.issue_in_memory(datacenter="l", region="FR", role=Role.CLIENT, now=NOW, tenant=name)


@given(st.text(max_size=80))
def test_validate_tenant_accepts_exactly_the_documented_alphabet(name):
    ok = (
        2 <= len(name) <= 63
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in name)
        and name[0] != "-"
    )
    if ok:
        assert validate_tenant(name) == name
    else:
        with pytest.raises(IdentityError):
            validate_tenant(name)


def forged(uris: list[str], role: Role) -> x509.Certificate:
    """A CA-signed certificate whose SAN carries ``uris`` (what a buggy or hostile CA tool
    could produce); the parser must refuse the ambiguous ones."""
    key = Ed25519PrivateKey.generate()
    good = client(None)
    node_hex = node_id_from_public_key(key.public_key()).hex()
    subject = x509.Name(
        [
            *[a for a in good.subject if a.oid != x509.NameOID.COMMON_NAME],
            x509.NameAttribute(x509.NameOID.COMMON_NAME, node_hex),
        ]
    )
    san = [x509.DNSName(node_hex + ".p2pstore"), *[x509.UniformResourceIdentifier(u) for u in uris]]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(CA.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(role.extended_key_usages)), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(authority_key_identifier(CA.certificate), critical=False)
    )
    return builder.sign(CA._key, algorithm=None)


def test_two_tenants_in_one_certificate_are_malformed():
    cert = forged([TENANT_URI_PREFIX + "acme", TENANT_URI_PREFIX + "other"], Role.CLIENT)
    with pytest.raises(PeerRefused, match="2 tenants") as caught:
        TRUST.verify(cert, NOW)
    assert caught.value.reason == "malformed-certificate"


def test_a_node_certificate_naming_a_tenant_is_malformed():
    cert = forged([TENANT_URI_PREFIX + "acme"], Role.NODE)
    with pytest.raises(PeerRefused, match="node certificate cannot act for a tenant"):
        TRUST.verify(cert, NOW)


def test_an_invalid_tenant_name_in_a_certificate_is_malformed():
    cert = forged([TENANT_URI_PREFIX + "Not_Valid"], Role.CLIENT)
    with pytest.raises(PeerRefused, match="invalid tenant name"):
        TRUST.verify(cert, NOW)


def test_other_uris_are_ignored():
    cert = forged(["https://example.org/x"], Role.CLIENT)
    assert TRUST.verify(cert, NOW).tenant is None
