"""Certificate requests: how a node gets certified without its private key ever leaving it.

Strategy: ``p2pstore node init`` makes the key on the node and a PKCS#10 request signed with it
(so the CA knows the requester holds the key, and the node id, the hash of that key, is fixed
before any certificate exists); only the request travels to the CA.  What the request says
(datacenter, region) is a proposal: the CA operator reads it back from :func:`read_request` and
may sign something else.  Renewal certifies the same public key again, so the node id, and
everything the mesh knows under it, stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from p2pstore.errors import IdentityError
from p2pstore.identity.ca import MeshCA
from p2pstore.identity.ca_index import check_file_name
from p2pstore.identity.certificates import (
    format_serial,
    identity_from_certificate,
    validate_datacenter,
    validate_region,
)
from p2pstore.identity.credentials import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    private_key_pem,
    write_new_file,
)
from p2pstore.identity.nodeid import NodeId, node_id_from_public_key

MAX_REQUEST_BYTES = 16 * 1024
"""A request is well under 1 KiB; a larger file is not one."""


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """A verified request: its signature proves the requester holds the key of ``node_id``."""

    public_key: Ed25519PublicKey
    node_id: NodeId
    datacenter: str
    region: str
    name: str


def build_request(
    key: Ed25519PrivateKey, *, name: str, datacenter: str, region: str
) -> x509.CertificateSigningRequest:
    """A request for ``key`` (CN = its node id, OU = datacenter, ST = region, a pseudonym
    attribute = the file name the operator chose).  Raises :class:`IdentityError` if an
    argument is invalid."""
    check_file_name(name)
    validate_datacenter(datacenter)
    validate_region(region)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, region),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, datacenter),
            x509.NameAttribute(NameOID.PSEUDONYM, name),
            x509.NameAttribute(
                NameOID.COMMON_NAME, node_id_from_public_key(key.public_key()).hex()
            ),
        ]
    )
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, algorithm=None)


def read_request(data: bytes, source: str) -> CertificateRequest:
    """Parse and verify a PEM request from ``source`` (a file name, for messages).

    Raises :class:`IdentityError` saying what is wrong: not a request, a bad signature (altered
    on the way, or not made by the key it carries), not an Ed25519 key, or a node id, datacenter
    or region that does not fit.
    """
    if len(data) > MAX_REQUEST_BYTES:
        raise IdentityError(f"{source} is {len(data)} bytes: not a p2pstore certificate request")
    try:
        return _verified(x509.load_pem_x509_csr(data), source)
    except _PARSE_ERRORS as error:  # parsing is lazy: a damaged file surfaces anywhere here
        raise IdentityError(f"{source} is not a PEM certificate request: {error!r}") from error


_PARSE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    UnsupportedAlgorithm,
)


def _verified(request: x509.CertificateSigningRequest, source: str) -> CertificateRequest:
    key = request.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError(
            f"{source} requests a certificate for a {type(key).__name__}; p2pstore nodes use "
            "Ed25519 keys: make the request with 'p2pstore node init'"
        )
    if not request.is_signature_valid:
        raise IdentityError(
            f"{source} is not signed by the key it carries: it was altered, or forged; ask the "
            "node's operator for a new one"
        )
    node_id = node_id_from_public_key(key)
    subject = request.subject
    fields = {
        "CN": _one(subject, NameOID.COMMON_NAME, source),
        "OU": _one(subject, NameOID.ORGANIZATIONAL_UNIT_NAME, source),
        "ST": _one(subject, NameOID.STATE_OR_PROVINCE_NAME, source),
        "pseudonym": _one(subject, NameOID.PSEUDONYM, source),
    }
    if fields["CN"] != node_id.hex():
        raise IdentityError(
            f"{source} names node {fields['CN']!r}, but its key's node id is {node_id.hex()}"
        )
    try:
        datacenter = validate_datacenter(fields["OU"])
        region = validate_region(fields["ST"])
        name = check_file_name(fields["pseudonym"])
    except IdentityError as error:
        raise IdentityError(f"{source}: {error}") from error
    return CertificateRequest(key, node_id, datacenter, region, name)


def _one(subject: x509.Name, oid: x509.ObjectIdentifier, source: str) -> str:
    values = subject.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise IdentityError(
            f"{source} must name exactly one {oid._name}: make it with 'p2pstore node init'"
        )
    return str(values[0].value)


def write_new_identity(
    directory: Path, name: str, *, datacenter: str, region: str
) -> tuple[Path, Path, NodeId]:
    """A fresh key ``directory/NAME.key`` (0600) and its request ``NAME.csr``; returns their
    paths and the node id.  Raises :class:`IdentityError` if either file exists (nothing is
    overwritten) or cannot be written."""
    key = Ed25519PrivateKey.generate()
    request = build_request(key, name=name, datacenter=datacenter, region=region)
    key_path, request_path = directory / f"{name}.key", directory / f"{name}.csr"
    for path in (key_path, request_path):
        if path.exists():
            raise IdentityError(f"{path} already exists; refusing to overwrite it")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise IdentityError(f"cannot create {directory}: {error.strerror or error}") from error
    write_new_file(key_path, private_key_pem(key), PRIVATE_FILE_MODE)
    try:
        pem = request.public_bytes(serialization.Encoding.PEM)
        write_new_file(request_path, pem, PUBLIC_FILE_MODE)
    except IdentityError:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, request_path, node_id_from_public_key(key.public_key())


def renew_certificate(
    authority: MeshCA, certificate: x509.Certificate, *, now: datetime, valid_days: int = 365
) -> x509.Certificate:
    """The same key, datacenter, region, role and tenant certified again from ``now`` under a new
    serial: the node id does not change.  The old certificate stays valid until it expires, so a
    node keeps working until the new one is installed.  Raises :class:`IdentityError` if
    ``certificate`` is not one of this CA's, is revoked, or the renewal would outlive the CA."""
    try:
        certificate.verify_directly_issued_by(authority.certificate)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise IdentityError(
            "this certificate was not issued by this mesh CA: only its own CA renews it"
        ) from error
    identity = identity_from_certificate(certificate)
    if identity.serial in {revocation.serial for revocation in authority.revocations()}:
        raise IdentityError(
            f"certificate {format_serial(identity.serial)} is revoked: a revoked node gets no "
            "renewal; its operator makes a new key and request ('p2pstore node init')"
        )
    names = {entry.serial: entry.name for entry in authority.issued_certificates()}
    key = certificate.public_key()
    assert isinstance(key, Ed25519PublicKey)  # identity_from_certificate checked it
    return authority.certify(
        key,
        names.get(identity.serial),
        datacenter=identity.datacenter,
        region=identity.region,
        role=identity.role,
        now=now,
        valid_days=valid_days,
        tenant=identity.tenant,
    )
