"""MeshCA on disk: files, modes, refusing to overwrite, the index, revocation."""

import json
import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from p2pstore.errors import IdentityError, PeerRefused
from p2pstore.identity import MeshCA, NodeCredentials, Role, TrustAnchor

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca_dir(tmp_path):
    return tmp_path / "mesh-ca"


@pytest.fixture
def ca(ca_dir):
    return MeshCA.create(ca_dir, mesh_name="grand-est", now=NOW)


def test_create_writes_ca_files_with_safe_modes(ca, ca_dir):
    assert mode(ca_dir) == 0o700
    assert mode(ca_dir / "ca.key") == 0o600
    for name in ("ca.crt", "crl.pem", "issued.json"):
        assert (ca_dir / name).is_file()
    assert b"PRIVATE KEY" in (ca_dir / "ca.key").read_bytes()
    assert not list(ca_dir.glob(".*.tmp"))


def test_ca_certificate_profile(ca):
    cert = ca.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "grand-est mesh CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "grand-est"
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)


def test_load_round_trips(ca, ca_dir):
    loaded = MeshCA.load(ca_dir)
    assert loaded.certificate == ca.certificate
    assert loaded.mesh_name == "grand-est"
    assert loaded.revocation_list_pem() == ca.revocation_list_pem()


def test_create_refuses_to_overwrite(ca, ca_dir):
    key_before = (ca_dir / "ca.key").read_bytes()
    with pytest.raises(IdentityError, match="already exists; refusing to overwrite"):
        MeshCA.create(ca_dir, mesh_name="grand-est", now=NOW)
    assert (ca_dir / "ca.key").read_bytes() == key_before


def test_create_refuses_when_only_the_certificate_exists(tmp_path):
    (tmp_path / "ca.crt").write_text("something")
    with pytest.raises(IdentityError, match=r"ca\.crt already exists"):
        MeshCA.create(tmp_path, mesh_name="m", now=NOW)
    assert not (tmp_path / "ca.key").exists()


def test_create_rejects_bad_mesh_name(tmp_path):
    with pytest.raises(IdentityError, match="invalid mesh name"):
        MeshCA.create(tmp_path / "ca", mesh_name=" bad", now=NOW)
    assert not (tmp_path / "ca").exists()


def test_load_refuses_world_readable_key(ca_dir, ca):
    (ca_dir / "ca.key").chmod(0o644)
    with pytest.raises(IdentityError, match=r"chmod 600 .*ca\.key"):
        MeshCA.load(ca_dir)


def test_load_missing_ca_says_how_to_create_one(tmp_path):
    with pytest.raises(IdentityError, match="p2pstore ca init"):
        MeshCA.load(tmp_path / "nowhere")


def test_load_refuses_corrupt_index(ca_dir, ca):
    (ca_dir / "issued.json").write_text("{not json")
    with pytest.raises(IdentityError, match=r"issued\.json is unreadable or corrupt"):
        MeshCA.load(ca_dir)


def test_issue_writes_key_and_certificate(ca, ca_dir, tmp_path):
    out = tmp_path / "nodes"
    creds = ca.issue(out, "node-1", datacenter="strasbourg-1", region="FR-GES", now=NOW)
    assert creds.key_path == out / "node-1.key"
    assert creds.certificate_path == out / "node-1.crt"
    assert mode(out / "node-1.key") == 0o600
    loaded = NodeCredentials.load(out / "node-1.key", out / "node-1.crt")
    assert loaded.identity == creds.identity
    anchor = TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem")
    assert anchor.verify(loaded.certificate, NOW) == creds.identity
    [entry] = MeshCA.load(ca_dir).issued_certificates()
    assert (entry.serial, entry.name, entry.node_id) == (
        creds.identity.serial,
        "node-1",
        creds.node_id,
    )
    assert creds.identity.serial.bit_length() > 32  # random, not a counter


def test_leaf_certificate_profile(ca):
    creds = ca.issue_in_memory(datacenter="dc-1", region="FR-GES", now=NOW)
    cert = creds.certificate
    node_hex = creds.node_id.hex()
    subject = {attr.oid: attr.value for attr in cert.subject}
    assert subject == {
        NameOID.COMMON_NAME: node_hex,
        NameOID.ORGANIZATIONAL_UNIT_NAME: "dc-1",
        NameOID.STATE_OR_PROVINCE_NAME: "FR-GES",
        NameOID.ORGANIZATION_NAME: "grand-est",
    }
    assert cert.issuer == ca.certificate.subject
    assert cert.version is x509.Version.v3
    ext = cert.extensions
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert set(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [f"{node_hex}.p2pstore"]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki == ski.value.digest


def test_issue_refuses_to_overwrite_and_rejects_bad_names(ca, tmp_path):
    ca.issue(tmp_path, "node-1", datacenter="dc", region="FR", now=NOW)
    key_before = (tmp_path / "node-1.key").read_bytes()
    with pytest.raises(IdentityError, match="already exists"):
        ca.issue(tmp_path, "node-1", datacenter="dc", region="FR", now=NOW)
    assert (tmp_path / "node-1.key").read_bytes() == key_before
    for bad in ("../escape", ".hidden", "", "a/b"):
        with pytest.raises(IdentityError, match="invalid certificate name"):
            ca.issue(tmp_path, bad, datacenter="dc", region="FR", now=NOW)


def test_issue_rejects_invalid_fields_before_writing(ca, tmp_path):
    with pytest.raises(IdentityError, match="invalid region 'Grand Est'"):
        ca.issue(tmp_path, "n", datacenter="dc", region="Grand Est", now=NOW)
    with pytest.raises(IdentityError, match="validity must be at least 1 day"):
        ca.issue(tmp_path, "n", datacenter="dc", region="FR", now=NOW, valid_days=0)
    with pytest.raises(IdentityError, match="would outlive the mesh CA"):
        ca.issue(tmp_path, "n", datacenter="dc", region="FR", now=NOW, valid_days=4000)
    assert not list(tmp_path.glob("n.*"))


def test_two_ca_handles_do_not_lose_each_others_index_entries(ca, ca_dir, tmp_path):
    other = MeshCA.load(ca_dir)
    a = ca.issue(tmp_path, "a", datacenter="dc", region="FR", now=NOW)
    b = other.issue(tmp_path, "b", datacenter="dc", region="FR", now=NOW)
    serials = {entry.serial for entry in MeshCA.load(ca_dir).issued_certificates()}
    assert serials == {a.identity.serial, b.identity.serial}


def test_revoke_then_reloaded_trust_anchor_refuses(ca, ca_dir, tmp_path):
    victim = ca.issue(tmp_path, "victim", datacenter="dc-1", region="FR-GES", now=NOW)
    bystander = ca.issue(tmp_path, "bystander", datacenter="dc-2", region="FR-GES", now=NOW)
    anchor = TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem")
    assert anchor.verify(victim.certificate, NOW) == victim.identity

    crl_path = MeshCA.load(ca_dir).revoke(
        victim.identity.serial, now=NOW + timedelta(days=1), reason="keyCompromise"
    )
    assert crl_path == ca_dir / "crl.pem"
    assert anchor.verify(victim.certificate, NOW) == victim.identity  # old snapshot
    reloaded = TrustAnchor.load(ca_dir / "ca.crt", crl_path)
    with pytest.raises(PeerRefused) as caught:
        reloaded.verify(victim.certificate, NOW + timedelta(days=2))
    assert caught.value.reason == "revoked"
    assert reloaded.verify(bystander.certificate, NOW) == bystander.identity
    assert reloaded.crl_next_update == NOW + timedelta(days=31)
    [revocation] = MeshCA.load(ca_dir).revocations()
    assert revocation.serial == victim.identity.serial
    assert revocation.reason is x509.ReasonFlags.key_compromise


def test_revoke_is_idempotent_and_bumps_the_crl_number(ca, tmp_path):
    creds = ca.issue(tmp_path, "n", datacenter="dc", region="FR", now=NOW)
    first = ca.revoke(creds.identity.serial, now=NOW)
    number_1 = x509.load_pem_x509_crl(first.read_bytes()).extensions.get_extension_for_class(
        x509.CRLNumber
    )
    ca.revoke(creds.identity.serial, now=NOW + timedelta(days=3))
    crl = x509.load_pem_x509_crl(first.read_bytes())
    assert [r.serial_number for r in crl] == [creds.identity.serial]
    assert next(iter(crl)).revocation_date_utc == NOW  # first date kept
    assert crl.last_update_utc == NOW + timedelta(days=3)
    number_2 = crl.extensions.get_extension_for_class(x509.CRLNumber)
    assert number_2.value.crl_number == number_1.value.crl_number + 1


def test_revoke_unknown_serial_is_refused(ca):
    with pytest.raises(IdentityError, match="was not issued by this CA"):
        ca.revoke(123456789, now=NOW)


def test_revoke_rejects_unknown_reason(ca, tmp_path):
    creds = ca.issue(tmp_path, "n", datacenter="dc", region="FR", now=NOW)
    with pytest.raises(IdentityError, match=r"unknown revocation reason 'lost'.*keyCompromise"):
        ca.revoke(creds.identity.serial, now=NOW, reason="lost")


def test_crl_of_another_ca_is_refused_naming_the_file(ca, ca_dir, tmp_path):
    other_dir = tmp_path / "other"
    MeshCA.create(other_dir, mesh_name="grand-est", now=NOW)
    with pytest.raises(IdentityError, match=r"other/crl\.pem.*not signed by the mesh CA"):
        TrustAnchor.load(ca_dir / "ca.crt", other_dir / "crl.pem")


def test_trust_anchor_load_errors_name_the_file(ca, ca_dir, tmp_path):
    with pytest.raises(IdentityError, match=r"missing\.crt"):
        TrustAnchor.load(tmp_path / "missing.crt")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(IdentityError, match=r"garbage\.pem is not a valid X\.509 certificate"):
        TrustAnchor.load(garbage)
    node = ca.issue(tmp_path, "n", datacenter="dc", region="FR", now=NOW)
    with pytest.raises(IdentityError, match=r"n\.crt: not a"):
        TrustAnchor.load(node.certificate_path)
    assert TrustAnchor.load(ca_dir / "ca.crt").revoked_serials == frozenset()


def test_index_file_is_plain_json(ca, ca_dir, tmp_path):
    creds = ca.issue(tmp_path, "n", datacenter="dc", region="FR", role=Role.CLIENT, now=NOW)
    document = json.loads((ca_dir / "issued.json").read_text())
    assert document["format"] == 1
    [entry] = document["issued"]
    assert entry["serial"] == str(creds.identity.serial)
    assert entry["role"] == "client"
