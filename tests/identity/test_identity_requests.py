"""Keys stay on the node: requests, signing, renewal under the same node id, an encrypted CA key."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.errors import IdentityError, KeyEncrypted
from p2pstore.identity import MeshCA, NodeCredentials, Role, TrustAnchor, identity_from_certificate
from p2pstore.identity.signing_request import (
    build_request,
    read_request,
    renew_certificate,
    write_new_identity,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def pem(request: x509.CertificateSigningRequest) -> bytes:
    return request.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def authority(tmp_path):
    return MeshCA.create(tmp_path / "ca", mesh_name="grand-est", now=NOW)


def test_a_signed_request_certifies_the_nodes_own_key(authority, tmp_path):
    key_path, request_path, node_id = write_new_identity(
        tmp_path / "node", "strasbourg-1", datacenter="dc-strasbourg-1", region="FR-GES"
    )
    assert key_path.stat().st_mode & 0o777 == 0o600
    request = read_request(request_path.read_bytes(), "strasbourg-1.csr")
    assert (request.node_id, request.datacenter, request.region, request.name) == (
        node_id, "dc-strasbourg-1", "FR-GES", "strasbourg-1",
    )  # fmt: skip
    certificate = authority.certify(
        request.public_key, request.name, datacenter="dc-2", region="FR-IDF", now=NOW
    )
    (tmp_path / "node" / "strasbourg-1.crt").write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
    )
    # The CA never had the private key, yet key and certificate belong together.
    credentials = NodeCredentials.load(key_path, tmp_path / "node" / "strasbourg-1.crt")
    assert credentials.node_id == node_id
    # The CA decides what is certified: here another datacenter than the one requested.
    assert (credentials.identity.datacenter, credentials.identity.region) == ("dc-2", "FR-IDF")
    assert authority.trust_anchor().verify(certificate, NOW).node_id == node_id
    entry = MeshCA.load(authority.directory).issued_certificates()[0]
    assert (entry.name, entry.node_id, entry.serial) == (
        "strasbourg-1", node_id, credentials.identity.serial,
    )  # fmt: skip


def test_write_new_identity_never_overwrites(tmp_path):
    write_new_identity(tmp_path, "n", datacenter="dc-1", region="FR-GES")
    before = (tmp_path / "n.key").read_bytes()
    with pytest.raises(IdentityError, match="already exists"):
        write_new_identity(tmp_path, "n", datacenter="dc-1", region="FR-GES")
    assert (tmp_path / "n.key").read_bytes() == before


@given(position=st.integers(min_value=0), value=st.integers(min_value=1, max_value=255))
def test_an_altered_request_is_refused(position, value):
    """Any change to the signed bytes (the datacenter asked for, the key, the signature) is
    caught; what comes out is never a request for something the key holder did not ask."""
    key = Ed25519PrivateKey.generate()
    der = bytearray(
        build_request(key, name="n", datacenter="dc-1", region="FR-GES").public_bytes(
            serialization.Encoding.DER
        )
    )
    der[position % len(der)] ^= value
    body = base64.encodebytes(bytes(der))
    data = b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"
    try:
        request = read_request(data, "r.csr")
    except IdentityError:
        return
    # A change that still verifies is outside what is signed and read (the DER length
    # encoding's slack, say): what is read must be what the key holder asked for.
    assert (request.datacenter, request.region, request.name) == ("dc-1", "FR-GES", "n")
    assert request.public_key.public_bytes_raw() == key.public_key().public_bytes_raw()


def test_a_request_naming_another_node_id_is_refused():
    key = Ed25519PrivateKey.generate()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "FR-GES"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "dc-1"),
            x509.NameAttribute(NameOID.PSEUDONYM, "n"),
            x509.NameAttribute(NameOID.COMMON_NAME, "00" * 20),
        ]
    )
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None)
    with pytest.raises(IdentityError, match="but its key's node id is"):
        read_request(pem(request), "r.csr")


def test_a_request_whose_name_is_a_path_is_refused():
    """The name becomes NAME.crt on the CA machine: a hostile request must not pick the path."""
    key = Ed25519PrivateKey.generate()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "FR-GES"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "dc-1"),
            x509.NameAttribute(NameOID.PSEUDONYM, "../../etc/cron.d/x"),
            x509.NameAttribute(NameOID.COMMON_NAME, identity_node_hex(key)),
        ]
    )
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None)
    with pytest.raises(IdentityError, match="invalid certificate name"):
        read_request(pem(request), "r.csr")


def identity_node_hex(key: Ed25519PrivateKey) -> str:
    from p2pstore.identity import node_id_from_public_key

    return node_id_from_public_key(key.public_key()).hex()


def test_garbage_and_oversized_requests_are_refused():
    with pytest.raises(IdentityError, match="not a PEM certificate request"):
        read_request(b"hello", "r.csr")
    with pytest.raises(IdentityError, match="not a p2pstore certificate request"):
        read_request(b"x" * 100_000, "r.csr")


def test_renewal_keeps_the_node_id_and_takes_a_new_serial(authority):
    old = authority.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW, valid_days=30)
    later = NOW + timedelta(days=25)
    renewed = renew_certificate(authority, old.certificate, now=later, valid_days=365)
    identity = identity_from_certificate(renewed)
    assert identity.node_id == old.node_id
    assert (identity.datacenter, identity.region, identity.role) == ("dc-1", "FR-GES", Role.NODE)
    assert identity.serial != old.identity.serial
    assert identity.not_after > later + timedelta(days=364)
    # The old key with the new certificate is a valid identity, after the old one expired.
    credentials = NodeCredentials.from_objects(old.private_key, renewed)
    trust = authority.trust_anchor()
    assert trust.verify(credentials.certificate, NOW + timedelta(days=60)).node_id == old.node_id
    # Both serials are in the index, so either can be revoked by serial.
    serials = {entry.serial for entry in authority.issued_certificates()}
    assert {old.identity.serial, identity.serial} <= serials


def test_a_revoked_certificate_is_not_renewed(authority):
    old = authority.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
    authority.revoke(old.identity.serial, now=NOW)
    with pytest.raises(IdentityError, match="is revoked"):
        renew_certificate(authority, old.certificate, now=NOW)


def test_a_certificate_of_another_ca_is_not_renewed(authority):
    other = MeshCA.create_in_memory(mesh_name="grand-est", now=NOW)
    foreign = other.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
    with pytest.raises(IdentityError, match="not issued by this mesh CA"):
        renew_certificate(authority, foreign.certificate, now=NOW)


def test_an_encrypted_ca_key_needs_its_passphrase(tmp_path):
    directory = tmp_path / "ca"
    MeshCA.create(directory, mesh_name="m", now=NOW, passphrase=b"correct horse battery")
    assert (directory / "ca.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    with pytest.raises(KeyEncrypted, match="passphrase is needed"):
        MeshCA.load(directory)
    with pytest.raises(IdentityError, match="wrong passphrase"):
        MeshCA.load(directory, b"not the passphrase")
    authority = MeshCA.load(directory, b"correct horse battery")
    issued = authority.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
    trust = TrustAnchor.load(directory / "ca.crt", directory / "crl.pem")
    assert trust.verify(issued.certificate, NOW).node_id == issued.node_id
