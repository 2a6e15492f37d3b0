"""The certificate profile works for TLS 1.3 mutual authentication in Python's ssl/OpenSSL.

The handshake runs over in-memory BIOs (no sockets, no threads).  ssl checks validity against
the real clock, so these certificates are issued around the real current time.
"""

import ssl
from datetime import UTC, datetime

import pytest

from p2pstore.identity import MeshCA, Role

REAL_NOW = datetime.now(UTC)  # only for ssl, which reads the wall clock itself


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    base = tmp_path_factory.mktemp("tls")
    ca = MeshCA.create(base / "ca", mesh_name="grand-est", now=REAL_NOW)
    server = ca.issue(base, "server", datacenter="dc-1", region="FR-GES", now=REAL_NOW)
    client = ca.issue(base, "client", datacenter="dc-2", region="FR-GES", now=REAL_NOW)
    user = ca.issue(base, "user", datacenter="laptop", region="FR", role=Role.CLIENT, now=REAL_NOW)
    other_ca = MeshCA.create(base / "other", mesh_name="grand-est", now=REAL_NOW)
    stranger = other_ca.issue(base, "stranger", datacenter="dc-9", region="FR", now=REAL_NOW)
    return {
        "ca": ca,
        "ca_file": str(base / "ca" / "ca.crt"),
        "server": server,
        "client": client,
        "user": user,
        "stranger": stranger,
    }


def context(creds, ca_file, *, server_side):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(creds.certificate_path), str(creds.key_path))
    ctx.load_verify_locations(cafile=ca_file)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def handshake(client_ctx, server_ctx):
    """Pump a TLS handshake between two SSLObjects; return them once both are done."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = set()
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if name not in done:
                try:
                    side.do_handshake()
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if len(done) == 2:
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return client, server
    raise AssertionError("handshake did not finish")


def test_mutual_tls13_handshake_and_peer_identities(mesh):
    client_ctx = context(mesh["client"], mesh["ca_file"], server_side=False)
    server_ctx = context(mesh["server"], mesh["ca_file"], server_side=True)
    client, server = handshake(client_ctx, server_ctx)
    assert client.version() == "TLSv1.3"
    anchor = mesh["ca"].trust_anchor()
    now = datetime.now(UTC)
    assert anchor.verify_der(server.getpeercert(binary_form=True), now) == mesh["client"].identity
    assert anchor.verify_der(client.getpeercert(binary_form=True), now) == mesh["server"].identity


def test_client_role_certificate_can_connect_as_client(mesh):
    client_ctx = context(mesh["user"], mesh["ca_file"], server_side=False)
    server_ctx = context(mesh["server"], mesh["ca_file"], server_side=True)
    _, server = handshake(client_ctx, server_ctx)
    identity = (
        mesh["ca"]
        .trust_anchor()
        .verify_der(server.getpeercert(binary_form=True), datetime.now(UTC))
    )
    assert identity.role is Role.CLIENT


def test_client_role_certificate_cannot_serve(mesh):
    client_ctx = context(mesh["client"], mesh["ca_file"], server_side=False)
    server_ctx = context(mesh["user"], mesh["ca_file"], server_side=True)
    with pytest.raises(ssl.SSLCertVerificationError, match="purpose"):
        handshake(client_ctx, server_ctx)


def test_certificate_from_another_ca_fails_the_handshake(mesh):
    client_ctx = context(mesh["stranger"], mesh["ca_file"], server_side=False)
    server_ctx = context(mesh["server"], mesh["ca_file"], server_side=True)
    with pytest.raises(ssl.SSLError):
        handshake(client_ctx, server_ctx)
