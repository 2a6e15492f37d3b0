"""``p2pstore ca``: the CA ceremony as an operator types it, through click's test runner."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from p2pstore.cli.main import cli
from p2pstore.identity import (
    MeshCA,
    Role,
    TrustAnchor,
    identity_from_certificate,
    load_certificate,
)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def field(output: str, name: str) -> str:
    """The value printed after ``name:`` in a command's output."""
    match = re.search(rf"^\s*{re.escape(name)}:\s+(\S+)", output, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{output}"
    return match.group(1)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    result = run("ca", "init", directory, "--mesh", "grand-est")
    assert result.exit_code == 0, result.output
    return directory


def issue(ca_dir: Path, name: str, *extra: str, region: str = "FR-GES") -> Result:
    return run(
        "ca", "issue", ca_dir, "--name", name, "--datacenter", "dc-strasbourg-1",
        "--region", region, *extra,
    )  # fmt: skip


def test_init_creates_a_ca_with_a_private_key(ca_dir):
    assert mode(ca_dir / "ca.key") == 0o600
    assert mode(ca_dir) == 0o700
    authority = MeshCA.load(ca_dir)
    assert authority.mesh_name == "grand-est"
    trust = TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem")
    assert trust.revoked_serials == frozenset()


def test_init_says_where_the_files_are(tmp_path):
    result = run("ca", "init", tmp_path / "ca", "--mesh", "grand-est")
    assert result.exit_code == 0
    assert "ca.key" in result.output and "0600" in result.output
    assert "crl.pem" in result.output


def test_init_refuses_to_overwrite_a_ca_with_a_one_line_error(ca_dir):
    key_before = (ca_dir / "ca.key").read_bytes()
    result = run("ca", "init", ca_dir, "--mesh", "other")
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("p2pstore: error: ")
    assert "already exists" in line and "refusing to overwrite" in line
    assert "Traceback" not in result.stderr
    assert (ca_dir / "ca.key").read_bytes() == key_before


def test_init_rejects_a_bad_mesh_name(tmp_path):
    result = run("ca", "init", tmp_path / "ca", "--mesh", " spaced ")
    assert result.exit_code == 1
    assert "invalid mesh name" in result.stderr
    assert not (tmp_path / "ca" / "ca.key").exists()


def test_issue_writes_a_private_key_and_a_certificate_with_what_was_asked(ca_dir, tmp_path):
    out = tmp_path / "node-1"
    result = issue(ca_dir, "node-1", "--out", str(out), region="FR-GES")
    assert result.exit_code == 0, result.output
    assert mode(out / "node-1.key") == 0o600
    identity = identity_from_certificate(load_certificate(out / "node-1.crt"))
    assert identity.datacenter == field(result.output, "datacenter") == "dc-strasbourg-1"
    assert identity.region == field(result.output, "region") == "FR-GES"
    assert identity.node_id.hex() == field(result.output, "node id")
    assert str(identity.serial) == field(result.output, "serial")
    assert identity.role is Role.NODE
    TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem").verify(
        load_certificate(out / "node-1.crt"), identity.not_before
    )


def test_issue_a_client_identity(ca_dir):
    result = issue(ca_dir, "alice", "--client")
    assert result.exit_code == 0, result.output
    assert "client identity" in result.output
    assert identity_from_certificate(load_certificate(ca_dir / "alice.crt")).role is Role.CLIENT


def test_issue_a_client_identity_for_a_tenant(ca_dir):
    result = issue(ca_dir, "gateway-1", "--client", "--tenant", "univ-strasbourg")
    assert result.exit_code == 0, result.output
    assert field(result.output, "tenant") == "univ-strasbourg"
    cert = load_certificate(ca_dir / "gateway-1.crt")
    assert identity_from_certificate(cert).tenant == "univ-strasbourg"
    listed = run("ca", "list", ca_dir)
    assert listed.exit_code == 0, listed.output


def test_a_node_identity_cannot_act_for_a_tenant(ca_dir):
    result = issue(ca_dir, "node-9", "--tenant", "acme")
    assert result.exit_code != 0
    assert "client" in result.output
    assert not (ca_dir / "node-9.crt").exists()


@pytest.mark.parametrize("region", ["fr-ges", "FRANCE", "F", "FR_GES"])
def test_issue_names_an_invalid_region(ca_dir, region):
    result = issue(ca_dir, "node-1", region=region)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert f"invalid region {region!r}" in line
    assert "FR-GES" in line  # shows what a good code looks like
    assert not (ca_dir / "node-1.key").exists()


def test_issue_hints_the_upper_case_region(ca_dir):
    result = issue(ca_dir, "node-1", region="fr-ges")
    assert "did you mean 'FR-GES'?" in result.stderr


def test_issue_refuses_to_overwrite_an_identity(ca_dir):
    assert issue(ca_dir, "node-1").exit_code == 0
    key_before = (ca_dir / "node-1.key").read_bytes()
    result = issue(ca_dir, "node-1")
    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert (ca_dir / "node-1.key").read_bytes() == key_before


def test_issue_without_a_ca_says_how_to_make_one(tmp_path):
    result = issue(tmp_path, "node-1")
    assert result.exit_code == 1
    assert "p2pstore ca init" in result.stderr


def test_revoke_by_serial_reaches_the_trust_anchor(ca_dir):
    serial = field(issue(ca_dir, "node-1").output, "serial")
    other = field(issue(ca_dir, "node-2").output, "serial")
    result = run("ca", "revoke", ca_dir, "--serial", serial)
    assert result.exit_code == 0, result.output
    assert "ca publish" in result.output and "crl.pem" in result.output
    trust = TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem")
    assert trust.revoked_serials == {int(serial)}
    assert int(other) not in trust.revoked_serials


def test_revoke_by_hex_serial(ca_dir):
    serial = int(field(issue(ca_dir, "node-1").output, "serial"))
    assert run("ca", "revoke", ca_dir, "--serial", hex(serial)).exit_code == 0
    assert TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem").revoked_serials == {serial}


def test_revoke_by_certificate_file(ca_dir):
    assert issue(ca_dir, "node-1").exit_code == 0
    certificate = ca_dir / "node-1.crt"
    result = run("ca", "revoke", ca_dir, "--certificate", certificate)
    assert result.exit_code == 0, result.output
    serial = identity_from_certificate(load_certificate(certificate)).serial
    trust = TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem")
    assert trust.revoked_serials == {serial}


def test_revoke_needs_exactly_one_of_serial_or_certificate(ca_dir):
    assert issue(ca_dir, "node-1").exit_code == 0
    for args in ([], ["--serial", "5", "--certificate", str(ca_dir / "node-1.crt")]):
        result = run("ca", "revoke", ca_dir, *args)
        assert result.exit_code == 2
        assert "exactly one of --serial or --certificate" in result.stderr


def test_revoke_an_unknown_serial_is_a_one_line_error(ca_dir):
    crl_before = (ca_dir / "crl.pem").read_bytes()
    result = run("ca", "revoke", ca_dir, "--serial", "12345")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert "serial 12345 was not issued by this CA" in line
    assert (ca_dir / "crl.pem").read_bytes() == crl_before


def test_revoke_a_malformed_serial_is_a_usage_error(ca_dir):
    result = run("ca", "revoke", ca_dir, "--serial", "abc")
    assert result.exit_code == 2
    assert "'abc' is not a certificate serial" in result.stderr


def test_list_shows_issued_and_revoked(ca_dir):
    first = field(issue(ca_dir, "node-1").output, "serial")
    second = field(issue(ca_dir, "node-2", region="FR-IDF").output, "serial")
    assert run("ca", "revoke", ca_dir, "--serial", first).exit_code == 0
    result = run("ca", "list", ca_dir)
    assert result.exit_code == 0, result.output
    assert "2 issued, 1 revoked" in result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert set(rows) == {first, second}
    assert "node-1" in rows[first] and rows[first].endswith("revoked")
    assert "FR-IDF" in rows[second] and "valid to" in rows[second]


def test_show_prints_what_the_certificate_binds(ca_dir):
    issued = issue(ca_dir, "node-1", region="FR-IDF").output
    result = run("ca", "show", ca_dir / "node-1.crt")
    assert result.exit_code == 0, result.output
    for name in ("node id", "datacenter", "region", "serial"):
        assert field(result.output, name) == field(issued, name)
    assert field(result.output, "role") == "node"
    assert field(result.output, "region") == "FR-IDF"


def test_show_refuses_a_certificate_that_is_not_a_node_certificate(ca_dir):
    result = run("ca", "show", ca_dir / "ca.crt")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert "malformed certificate" in line


def test_keys_stay_on_the_node_init_sign_renew_revoke(ca_dir, tmp_path):
    """The operator's guide's path: the node makes its key and a request; the CA signs the
    request (its key never seen); renewal keeps the node id; revocation reaches the CRL."""
    node_dir = tmp_path / "etc"
    made = run(
        "node", "init", node_dir, "--name", "strasbourg-1", "--datacenter", "dc-strasbourg-1",
        "--region", "FR-GES",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    node_id = re.search(r"created the key of node ([0-9a-f]{40})", made.output).group(1)
    assert mode(node_dir / "strasbourg-1.key") == 0o600
    assert sorted(p.name for p in ca_dir.iterdir() if p.suffix == ".key") == ["ca.key"]

    signed = run("ca", "sign", ca_dir, node_dir / "strasbourg-1.csr")
    assert signed.exit_code == 0, signed.output
    assert field(signed.output, "node id") == node_id
    assert field(signed.output, "datacenter") == "dc-strasbourg-1"
    first = identity_from_certificate(load_certificate(node_dir / "strasbourg-1.crt"))
    assert first.node_id.hex() == node_id and first.role is Role.NODE

    renewed = run("ca", "renew", ca_dir, node_dir / "strasbourg-1.crt", "--days", "400")
    assert renewed.exit_code == 0, renewed.output
    second = identity_from_certificate(load_certificate(node_dir / "strasbourg-1.renewed.crt"))
    assert second.node_id == first.node_id and second.serial != first.serial
    assert second.not_after > first.not_after
    listed = run("ca", "list", ca_dir)
    assert listed.output.count(" strasbourg-1 ") == 2  # the name column, beside dc-strasbourg-1

    revoked = run("ca", "revoke", ca_dir, "--certificate", node_dir / "strasbourg-1.renewed.crt")
    assert revoked.exit_code == 0, revoked.output
    trust = TrustAnchor.load(ca_dir / "ca.crt", ca_dir / "crl.pem")
    assert second.serial in trust.revoked_serials
    again = run("ca", "renew", ca_dir, node_dir / "strasbourg-1.renewed.crt", "--out", "x.crt")
    assert again.exit_code == 1 and "is revoked" in again.stderr


def test_sign_refuses_an_altered_request_in_one_line(ca_dir, tmp_path):
    assert run("node", "init", tmp_path, "--name", "n", "--datacenter", "dc-1",
               "--region", "FR-GES").exit_code == 0  # fmt: skip
    request = tmp_path / "n.csr"
    text = request.read_text()
    lines = text.splitlines()
    middle = lines[2]
    lines[2] = middle[:10] + ("A" if middle[10] != "A" else "B") + middle[11:]
    request.write_text("\n".join(lines) + "\n")
    result = run("ca", "sign", ca_dir, request)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "n.crt").exists()


def test_node_init_refuses_an_invalid_region_and_writes_nothing(tmp_path):
    result = run("node", "init", tmp_path / "etc", "--name", "n", "--datacenter", "dc-1",
                 "--region", "fr-ges")  # fmt: skip
    assert result.exit_code == 1 and "region" in result.stderr
    assert not (tmp_path / "etc").exists() or not any((tmp_path / "etc").iterdir())


def test_an_encrypted_ca_asks_for_its_passphrase(tmp_path, monkeypatch):
    directory = tmp_path / "ca"
    runner = CliRunner()
    made = runner.invoke(
        cli, ["ca", "init", str(directory), "--mesh", "m", "--encrypt"],
        input="correct horse battery\ncorrect horse battery\n",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "encrypted" in made.output
    assert (directory / "ca.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    asked = runner.invoke(cli, ["ca", "list", str(directory)], input="correct horse battery\n")
    assert asked.exit_code == 0, asked.output
    wrong = runner.invoke(cli, ["ca", "list", str(directory)], input="nope nope nope\n")
    assert wrong.exit_code == 1 and "wrong passphrase" in wrong.stderr
    monkeypatch.setenv("P2PSTORE_CA_PASSPHRASE", "correct horse battery")
    assert issue(directory, "client-1", "--client").exit_code == 0


def test_a_short_passphrase_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("P2PSTORE_CA_PASSPHRASE", "short")
    result = run("ca", "init", tmp_path / "ca", "--mesh", "m", "--encrypt")
    assert result.exit_code == 2 and "at least 12 characters" in result.stderr
    assert not (tmp_path / "ca" / "ca.key").exists()
