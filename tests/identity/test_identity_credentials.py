"""NodeCredentials: loading key and certificate files, signing."""

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.errors import IdentityError, IntegrityError
from p2pstore.identity import MeshCA, NodeCredentials, verify_signature
from p2pstore.identity.credentials import write_new_file

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CA = MeshCA.create_in_memory(mesh_name="grand-est", now=NOW)
ALICE = CA.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
BOB = CA.issue_in_memory(datacenter="dc-2", region="FR-GES", now=NOW)


@pytest.fixture
def files(tmp_path):
    creds = CA.issue(tmp_path, "node", datacenter="dc-1", region="FR-GES", now=NOW)
    return creds.key_path, creds.certificate_path


def test_load_round_trips(files):
    key_path, cert_path = files
    creds = NodeCredentials.load(key_path, cert_path)
    assert (creds.key_path, creds.certificate_path) == (key_path, cert_path)
    assert creds.identity.datacenter == "dc-1"
    assert creds.certificate_der().startswith(b"\x30")
    assert creds.certificate_pem().startswith(b"-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_key_accessible_to_others_is_refused_with_chmod_hint(files, mode):
    key_path, cert_path = files
    key_path.chmod(mode)
    with pytest.raises(IdentityError) as caught:
        NodeCredentials.load(key_path, cert_path)
    assert f"chmod 600 {key_path}" in str(caught.value)
    key_path.chmod(0o400)  # owner-only read is fine
    assert NodeCredentials.load(key_path, cert_path).identity.region == "FR-GES"


def test_key_of_another_node_is_refused(files, tmp_path):
    key_path, _ = files
    other_cert = tmp_path / "other.crt"
    other_cert.write_bytes(BOB.certificate_pem())
    with pytest.raises(IdentityError, match="does not match the certificate"):
        NodeCredentials.load(key_path, other_cert)


def test_missing_and_garbage_files_are_named(files, tmp_path):
    key_path, cert_path = files
    with pytest.raises(IdentityError, match=r"nope\.key"):
        NodeCredentials.load(tmp_path / "nope.key", cert_path)
    bad_cert = tmp_path / "bad.crt"
    bad_cert.write_bytes(b"\x00\x01garbage")
    with pytest.raises(IdentityError, match=r"bad\.crt is not a valid X\.509 certificate"):
        NodeCredentials.load(key_path, bad_cert)
    bad_key = tmp_path / "bad.key"
    bad_key.write_bytes(b"not a key")
    bad_key.chmod(0o600)
    with pytest.raises(IdentityError, match=r"bad\.key is not a PEM private key"):
        NodeCredentials.load(bad_key, cert_path)


def test_non_ed25519_key_file_is_refused(files, tmp_path):
    _, cert_path = files
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_key.chmod(0o600)
    with pytest.raises(IdentityError, match="expected an Ed25519 key"):
        NodeCredentials.load(ec_key, cert_path)


def test_mismatched_objects_are_refused():
    with pytest.raises(IdentityError, match="does not match"):
        NodeCredentials.from_objects(ALICE.private_key, BOB.certificate)


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=512))
def test_signatures_verify_and_name_the_signer(data):
    signature = ALICE.sign(data)
    assert len(signature) == 64
    assert verify_signature(ALICE.public_key_bytes(), data, signature) == ALICE.node_id
    assert (
        verify_signature(
            ALICE.private_key.public_key(), data, signature, expected_node_id=ALICE.node_id
        )
        == ALICE.node_id
    )
    with pytest.raises(IntegrityError, match="bad signature"):
        verify_signature(ALICE.public_key_bytes(), data + b"x", signature)
    with pytest.raises(IntegrityError, match="bad signature"):
        verify_signature(BOB.public_key_bytes(), data, signature)


def test_signature_by_the_wrong_node_is_refused():
    signature = ALICE.sign(b"record")
    with pytest.raises(IntegrityError, match="claims to come from node"):
        verify_signature(
            ALICE.public_key_bytes(), b"record", signature, expected_node_id=BOB.node_id
        )
    with pytest.raises(IntegrityError, match="not a raw 32-byte"):
        verify_signature(b"short", b"record", signature)


def test_write_new_file_never_overwrites(tmp_path):
    target = tmp_path / "secret"
    write_new_file(target, b"one", 0o600)
    with pytest.raises(IdentityError, match="already exists"):
        write_new_file(target, b"two", 0o600)
    assert target.read_bytes() == b"one"
    assert (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]
