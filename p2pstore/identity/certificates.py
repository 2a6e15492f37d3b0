"""Reading mesh certificates and deciding whether to trust them.

Strategy: a peer's node id, datacenter and region are *never* taken from what it says; they are
read from a certificate the mesh CA signed.  This module holds the two halves of that rule, kept
apart on purpose: :func:`identity_from_certificate` only parses (is this a well-formed p2pstore
certificate, and does its CN really name the hash of its own key?), and :class:`TrustAnchor`
decides (is it signed by *our* CA, in date, not revoked?).  TLS (OpenSSL) checks the chain during
the handshake; Python's ``ssl`` cannot load CRLs from memory, so revocation and our own profile
rules are checked here, after the handshake, on the peer's DER certificate.

The certificate profile (built by :mod:`p2pstore.identity.profile`, parsed here): subject CN =
40-hex node id, OU = datacenter, ST = region (an ISO 3166-2-like code such as ``FR-GES``), O =
mesh name; the role is the ExtendedKeyUsage (serverAuth+clientAuth for nodes, clientAuth only for
clients); a DNS SAN ``<node id>.p2pstore``; Ed25519 signatures throughout.  A client certificate
may name the tenant (institution) it acts for with a URI SAN ``urn:p2pstore:tenant:<tenant>``:
the mesh CA is what admits a machine into a tenant, exactly as it admits a node into a region,
and revoking the certificate takes the machine out.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from p2pstore.errors import IdentityError, PeerRefused
from p2pstore.identity.nodeid import NODE_ID_BYTES, NodeId, node_id_from_public_key, short_id

CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this long before the ``now`` they were issued at, for peers' clock skew."""

SAN_SUFFIX = ".p2pstore"
"""A certificate's DNS SubjectAlternativeName is ``<hex node id>.p2pstore``."""

TENANT_URI_PREFIX = "urn:p2pstore:tenant:"
"""A client certificate names its tenant with the URI SAN ``urn:p2pstore:tenant:<tenant>``."""

_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
_REGION = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")
_DATACENTER = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MESH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,47}")
_SERIAL = re.compile(r"[1-9][0-9]{0,48}|0[xX][0-9a-fA-F]{1,40}")
# Parsing a certificate is lazy in `cryptography`: any of these can surface while reading one.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


class Role(enum.Enum):
    """What a certificate admits its holder as; derived from its ExtendedKeyUsage."""

    NODE = "node"  # serves the mesh: TLS server and client
    CLIENT = "client"  # only connects (users running put/get, the devnet observer)

    @property
    def extended_key_usages(self) -> tuple[x509.ObjectIdentifier, ...]:
        """The EKU OIDs a certificate of this role carries."""
        if self is Role.NODE:
            return (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
        return (ExtendedKeyUsageOID.CLIENT_AUTH,)


def validate_region(code: str) -> str:
    """Check an ISO 3166-2-like region code (``FR``, ``FR-GES``); return it.

    Raises :class:`IdentityError` naming the bad code otherwise.
    """
    if _REGION.fullmatch(code) is None:
        hint = f"; did you mean {code.upper()!r}?" if _REGION.fullmatch(code.upper()) else ""
        raise IdentityError(
            f"invalid region {code!r}: expected an ISO 3166-2 style code, two capital letters "
            f"optionally followed by '-' and 1-3 capitals or digits (e.g. 'FR' or 'FR-GES'){hint}"
        )
    return code


def validate_datacenter(name: str) -> str:
    """Check a datacenter name (1-64 characters of ``A-Z a-z 0-9 . _ -``); return it.

    Raises :class:`IdentityError` naming the bad name otherwise.
    """
    if _DATACENTER.fullmatch(name) is None:
        raise IdentityError(
            f"invalid datacenter name {name!r}: use 1 to 64 characters among letters, digits, "
            f"'.', '_' and '-' (e.g. 'strasbourg-1')"
        )
    return name


def validate_mesh_name(name: str) -> str:
    """Check a mesh name (1-48 characters of letters, digits, ``. _ -`` and space, starting
    with a letter or digit); return it.  Raises :class:`IdentityError` otherwise."""
    if _MESH_NAME.fullmatch(name) is None or name != name.strip():
        raise IdentityError(
            f"invalid mesh name {name!r}: use 1 to 48 characters among letters, digits, '.', "
            f"'_', '-' and inner spaces, starting with a letter or digit (e.g. 'grand-est')"
        )
    return name


def validate_tenant(name: str) -> str:
    """Check a tenant name (2-63 characters of ``a-z 0-9 -``, starting with a letter or digit);
    return it.  Raises :class:`IdentityError` naming the bad name otherwise."""
    if not isinstance(name, str) or _TENANT.fullmatch(name) is None:
        raise IdentityError(
            f"invalid tenant name {name!r}: use 2 to 63 lowercase letters, digits and '-', "
            f"starting with a letter or digit (e.g. 'univ-strasbourg')"
        )
    return name


def format_serial(serial: int) -> str:
    """How messages, the CA index and the CLI write a certificate serial (decimal)."""
    return str(serial)


def parse_serial(text: str) -> int:
    """Parse a serial in decimal (as :func:`format_serial` writes it) or ``0x``-prefixed hex.

    Raises :class:`IdentityError` naming the bad text otherwise.
    """
    stripped = text.strip()
    if _SERIAL.fullmatch(stripped) is None or int(stripped, 0) <= 0:
        raise IdentityError(
            f"{text!r} is not a certificate serial: expected a positive decimal number (or hex "
            f"with a 0x prefix), as 'p2pstore ca issue' printed it"
        )
    return int(stripped, 0)


def as_utc(moment: datetime, what: str = "now") -> datetime:
    """Return ``moment`` in UTC; raises :class:`ValueError` if it is naive (a caller bug)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {moment!r}")
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who a certificate says its holder is.  Trust it only when a :class:`TrustAnchor`
    returned it (or it describes our own credentials)."""

    node_id: NodeId
    datacenter: str
    region: str
    role: Role
    serial: int
    not_before: datetime
    not_after: datetime
    tenant: str | None = None
    """The tenant a client certificate acts for (its buckets, names, deletions), if any."""

    def __post_init__(self) -> None:
        if len(self.node_id) != NODE_ID_BYTES:
            raise ValueError(f"node_id must be 20 bytes, got {len(self.node_id)}")
        validate_datacenter(self.datacenter)
        validate_region(self.region)
        if self.tenant is not None:
            validate_tenant(self.tenant)
            if self.role is not Role.CLIENT:
                raise ValueError("only a client certificate acts for a tenant")
        if self.serial <= 0:
            raise ValueError(f"serial must be positive, got {self.serial}")
        object.__setattr__(self, "not_before", as_utc(self.not_before, "not_before"))
        object.__setattr__(self, "not_after", as_utc(self.not_after, "not_after"))
        if self.not_after < self.not_before:
            raise ValueError(f"not_after {self.not_after} is before not_before {self.not_before}")

    def describe(self) -> str:
        """``node 1a2b3c4d (dc-1, FR-GES)``: how messages and logs name this peer."""
        return f"{self.role.value} {short_id(self.node_id)} ({self.datacenter}, {self.region})"


def _malformed(cert: x509.Certificate, problem: str) -> PeerRefused:
    return PeerRefused(
        f"malformed certificate {_describe_unverified(cert)}: {problem}; it was not made by "
        f"'p2pstore ca issue' for this mesh, ask the mesh CA for a new one",
        reason="malformed-certificate",
    )


def _describe_unverified(cert: x509.Certificate) -> str:
    """Serial and claimed subject of a certificate we do not trust, for error messages."""
    try:
        return f"serial {format_serial(cert.serial_number)} ({cert.subject.rfc4514_string()!r})"
    except _PARSE_ERRORS:
        return "(unparseable subject)"


def _single_attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier, label: str) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    if len(values) != 1 or not isinstance(values[0].value, str):
        raise _malformed(cert, f"subject must hold exactly one {label}, found {len(values)}")
    return values[0].value


def identity_from_certificate(cert: x509.Certificate) -> PeerIdentity:
    """Parse a p2pstore certificate into a :class:`PeerIdentity`; no trust decision is made.

    Raises :class:`PeerRefused` (reason ``malformed-certificate``) if a field is missing or
    invalid, the key is not Ed25519, or the CN is not the node id of the certificate's own key.
    """
    try:
        return _parse_identity(cert)
    except _PARSE_ERRORS as error:
        raise _malformed(cert, f"cannot be parsed ({error})") from error


def _parse_identity(cert: x509.Certificate) -> PeerIdentity:
    if cert.version is not x509.Version.v3:
        raise _malformed(cert, f"version is {cert.version.name}, expected v3")
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise _malformed(cert, f"key is {type(key).__name__}, expected Ed25519")
    node_id = node_id_from_public_key(key)
    common_name = _single_attribute(cert, NameOID.COMMON_NAME, "CN (node id)")
    if common_name != node_id.hex():
        raise _malformed(
            cert, f"CN {common_name!r} is not the node id {node_id.hex()} of its public key"
        )
    _single_attribute(cert, NameOID.ORGANIZATION_NAME, "O (mesh name)")
    try:
        datacenter = validate_datacenter(
            _single_attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU (datacenter)")
        )
        region = validate_region(
            _single_attribute(cert, NameOID.STATE_OR_PROVINCE_NAME, "ST (region)")
        )
    except IdentityError as error:
        raise _malformed(cert, str(error)) from error
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound as error:
        raise _malformed(cert, f"extension missing ({error})") from error
    if constraints.ca:
        raise _malformed(cert, "it is a CA certificate, not a node or client certificate")
    role = next((r for r in Role if set(r.extended_key_usages) == usages), None)
    if role is None:
        names = sorted(u.dotted_string for u in usages)
        raise _malformed(cert, f"extended key usages {names} match neither node nor client")
    if cert.serial_number <= 0:
        raise _malformed(cert, "its serial number is not positive")
    tenant = _tenant(cert, role)
    return PeerIdentity(
        node_id=node_id,
        datacenter=datacenter,
        region=region,
        role=role,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        tenant=tenant,
    )


def _tenant(cert: x509.Certificate, role: Role) -> str | None:
    """The tenant the certificate's URI SAN names, if any (at most one, clients only)."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    tenants = [u.removeprefix(TENANT_URI_PREFIX) for u in uris if u.startswith(TENANT_URI_PREFIX)]
    if not tenants:
        return None
    if len(tenants) > 1:
        raise _malformed(cert, f"it names {len(tenants)} tenants, at most one is allowed")
    if role is not Role.CLIENT:
        raise _malformed(cert, "a node certificate cannot act for a tenant")
    try:
        return validate_tenant(tenants[0])
    except IdentityError as error:
        raise _malformed(cert, str(error)) from error


def load_certificate(path: Path) -> x509.Certificate:
    """Read a PEM (or DER) certificate file.  Raises :class:`IdentityError` naming the file."""
    data = _read(path, "certificate")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise IdentityError(f"{path} is not a valid X.509 certificate: {error}") from error


def load_crl(path: Path) -> x509.CertificateRevocationList:
    """Read a PEM (or DER) revocation list.  Raises :class:`IdentityError` naming the file."""
    data = _read(path, "revocation list")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as error:
        raise IdentityError(f"{path} is not a valid revocation list (CRL): {error}") from error


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise IdentityError(f"cannot read {what} {path}: {error.strerror or error}") from error


def check_ca_certificate(cert: x509.Certificate) -> None:
    """Check that ``cert`` is a self-signed Ed25519 CA certificate allowed to sign certificates
    and CRLs.  Raises :class:`IdentityError` saying what is wrong."""
    try:
        if not isinstance(cert.public_key(), Ed25519PublicKey):
            raise IdentityError("the mesh CA certificate's key is not Ed25519")
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        cert.verify_directly_issued_by(cert)
    except (*_PARSE_ERRORS, x509.ExtensionNotFound, InvalidSignature) as error:
        raise IdentityError(f"not a self-signed mesh CA certificate ({error!r})") from error
    if not constraints.ca or not usage.key_cert_sign or not usage.crl_sign:
        raise IdentityError("not a CA certificate (needs CA=True, keyCertSign and cRLSign)")


_SIGNED_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """What a node trusts: the mesh CA certificate and the serials its current CRL revokes."""

    ca_certificate: x509.Certificate
    revoked_serials: frozenset[int] = frozenset()
    crl_next_update: datetime | None = None  # when the CRL says a fresher one is due; may warn
    crl_number: int = 0
    """The CRL's number (0: no CRL): a node adopts a revocation list only if it is newer."""
    _signed: dict[bytes, PeerIdentity] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Certificates whose CA signature and profile were already checked (by fingerprint): a
    node meets the same peers again and again, and Ed25519 plus X.509 parsing cost ~0.4 ms.
    Revocation and validity are still checked on every use."""

    def __post_init__(self) -> None:
        check_ca_certificate(self.ca_certificate)

    @classmethod
    def load(
        cls, ca_certificate_path: Path, revocation_list_path: Path | None = None
    ) -> TrustAnchor:
        """Load the CA certificate and, if given, the CRL (whose signature must be the CA's).

        Raises :class:`IdentityError` naming the file that is unreadable or invalid.
        """
        ca = load_certificate(ca_certificate_path)
        try:
            check_ca_certificate(ca)
        except IdentityError as error:
            raise IdentityError(f"{ca_certificate_path}: {error}") from error
        if revocation_list_path is None:
            return cls(ca)
        crl = load_crl(revocation_list_path)
        try:
            return cls.from_objects(ca, crl)
        except IdentityError as error:
            raise IdentityError(f"{revocation_list_path}: {error}") from error

    @classmethod
    def from_objects(
        cls, ca_certificate: x509.Certificate, crl: x509.CertificateRevocationList | None = None
    ) -> TrustAnchor:
        """Build from parsed objects.  Raises :class:`IdentityError` if the CRL was not signed
        by this CA."""
        if crl is None:
            return cls(ca_certificate)
        ca_key = ca_certificate.public_key()
        if crl.issuer != ca_certificate.subject or not (
            isinstance(ca_key, Ed25519PublicKey) and crl.is_signature_valid(ca_key)
        ):
            raise IdentityError(
                f"revocation list issued by {crl.issuer.rfc4514_string()!r} is not signed by "
                f"the mesh CA {ca_certificate.subject.rfc4514_string()!r}; fetch crl.pem from "
                f"this mesh's CA"
            )
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except (x509.ExtensionNotFound, *_PARSE_ERRORS):
            number = 0
        return cls(
            ca_certificate,
            frozenset(revoked.serial_number for revoked in crl),
            crl.next_update_utc,
            number,
        )

    def ca_certificate_pem(self) -> str:
        """The CA certificate as PEM text, for ``ssl.SSLContext.load_verify_locations(cadata=)``."""
        return self.ca_certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def verify(self, cert: x509.Certificate, now: datetime) -> PeerIdentity:
        """Decide whether to admit the holder of ``cert`` at time ``now``; return who it is.

        Raises :class:`PeerRefused` with ``reason`` one of ``wrong-ca``,
        ``malformed-certificate``, ``revoked``, ``not-yet-valid`` or ``expired``.
        """
        now = as_utc(now)
        fingerprint = cert.fingerprint(hashes.SHA256())
        identity = self._signed.get(fingerprint)
        if identity is None:
            identity = self._check_signed(cert)
            if len(self._signed) >= _SIGNED_CACHE_SIZE:
                self._signed.clear()
            self._signed[fingerprint] = identity
        who = f"certificate {format_serial(identity.serial)} of {identity.describe()}"
        if identity.serial in self.revoked_serials:
            raise PeerRefused(
                f"{who} is revoked by the mesh CA; if that is a mistake its operator must ask "
                f"the mesh CA for a new certificate",
                reason="revoked",
            )
        ca_expiry = self.ca_certificate.not_valid_after_utc
        if now > ca_expiry:
            raise PeerRefused(
                f"the mesh CA certificate expired at {ca_expiry.isoformat()}, so {who} cannot be "
                f"trusted: the mesh CA must be renewed and redistributed",
                reason="expired",
            )
        if now < identity.not_before:
            raise PeerRefused(
                f"{who} is not valid before {identity.not_before.isoformat()} (now is "
                f"{now.isoformat()}): check both machines' clocks",
                reason="not-yet-valid",
            )
        if now > identity.not_after:
            raise PeerRefused(
                f"{who} expired at {identity.not_after.isoformat()}: ask the mesh CA for a new one",
                reason="expired",
            )
        return identity

    def _check_signed(self, cert: x509.Certificate) -> PeerIdentity:
        try:
            cert.verify_directly_issued_by(self.ca_certificate)
        except (*_PARSE_ERRORS, InvalidSignature) as error:
            raise PeerRefused(
                f"certificate {_describe_unverified(cert)} is not signed by this mesh's CA "
                f"({self.ca_certificate.subject.rfc4514_string()!r}): the peer belongs to another "
                f"mesh or its certificate was altered; it needs one issued by this mesh CA",
                reason="wrong-ca",
            ) from error
        return identity_from_certificate(cert)

    def verify_der(self, der: bytes, now: datetime) -> PeerIdentity:
        """Like :meth:`verify`, from DER bytes (what TLS hands over); garbage is refused with
        reason ``malformed-certificate``."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as error:
            raise PeerRefused(
                f"the peer's certificate is not valid DER X.509 ({len(der)} bytes): {error}",
                reason="malformed-certificate",
            ) from error
        return self.verify(cert, now)
