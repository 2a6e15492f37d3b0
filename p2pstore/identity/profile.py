"""Building certificates in the profile :mod:`p2pstore.identity.certificates` parses.

Kept apart from the parser so each module holds one idea, and next to it in the package so the
two cannot drift: the tests parse every certificate built here.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from p2pstore.errors import IdentityError
from p2pstore.identity.certificates import (
    SAN_SUFFIX,
    TENANT_URI_PREFIX,
    Role,
    validate_datacenter,
    validate_mesh_name,
    validate_region,
    validate_tenant,
)
from p2pstore.identity.nodeid import node_id_from_public_key


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def authority_key_identifier(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AuthorityKeyIdentifier that certificates and CRLs signed by ``ca`` carry."""
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_ca_certificate(
    key: Ed25519PrivateKey,
    *,
    mesh_name: str,
    not_before: datetime,
    not_after: datetime,
    serial: int,
) -> x509.Certificate:
    """The self-signed mesh CA certificate (CA=True, path length 0, keyCertSign+cRLSign).

    Raises :class:`IdentityError` if ``mesh_name`` is invalid.
    """
    validate_mesh_name(mesh_name)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, mesh_name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{mesh_name} mesh CA"),
        ]
    )
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(key, algorithm=None)


def build_node_certificate(
    ca_key: Ed25519PrivateKey,
    ca_certificate: x509.Certificate,
    public_key: Ed25519PublicKey,
    *,
    datacenter: str,
    region: str,
    role: Role,
    not_before: datetime,
    not_after: datetime,
    serial: int,
    tenant: str | None = None,
) -> x509.Certificate:
    """A node or client certificate for ``public_key`` in the profile
    :func:`~p2pstore.identity.certificates.identity_from_certificate` parses; a client's may
    name its ``tenant``.

    Raises :class:`IdentityError` if ``datacenter``, ``region`` or ``tenant`` is invalid, or a
    node certificate is given a tenant.
    """
    validate_datacenter(datacenter)
    validate_region(region)
    alt_names: list[x509.GeneralName] = []
    if tenant is not None:
        validate_tenant(tenant)
        if role is not Role.CLIENT:
            raise IdentityError("only a client certificate can act for a tenant, not a node's")
        alt_names.append(x509.UniformResourceIdentifier(TENANT_URI_PREFIX + tenant))
    node_hex = node_id_from_public_key(public_key).hex()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, region),
            *ca_certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, datacenter),
            x509.NameAttribute(NameOID.COMMON_NAME, node_hex),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(role.extended_key_usages)), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(node_hex + SAN_SUFFIX), *alt_names]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(ca_certificate), critical=False)
    )
    return builder.sign(ca_key, algorithm=None)
