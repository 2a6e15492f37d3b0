"""The mesh CA's revocation list as a value that travels from peer to peer.

Strategy: a revocation list reaches a node from any DHT holder or peer, so nothing about it may
depend on who relayed it.  The CA's signature says it is genuine, its CRL number says which of
two genuine lists is newer, and a node takes one only if it is newer than the one in force: a
member can neither forge a list nor roll a node back to an older one the CA did sign.  The size
is bounded before anything is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2pstore.errors import IdentityError
from p2pstore.identity.certificates import PeerIdentity, Role, TrustAnchor
from p2pstore.identity.nodeid import node_id_from_public_key

MAX_CRL_BYTES = 256 * 1024
"""The largest revocation list a node parses: some 5,000 revoked certificates."""

CA_DATACENTER = "mesh-ca"
CA_REGION = "ZZ"
"""What a record store writes down for the mesh CA as a publisher (it has no datacenter)."""

_PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension)


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A CRL the mesh CA signed: its DER bytes, number, revoked serials and next update."""

    der: bytes
    number: int
    revoked_serials: frozenset[int]
    next_update: datetime | None


def parse_revocation_list(der: bytes, ca_certificate: x509.Certificate) -> RevocationList:
    """Parse a DER CRL and check that ``ca_certificate``'s key signed it.

    Raises :class:`IdentityError` if it is too large, malformed, not this CA's, or carries no
    CRL number (without one, newer and older cannot be told apart).
    """
    if len(der) > MAX_CRL_BYTES:
        raise IdentityError(f"a revocation list has at most {MAX_CRL_BYTES} bytes, got {len(der)}")
    ca_key = ca_certificate.public_key()
    try:
        crl = x509.load_der_x509_crl(der)
        genuine = (
            crl.issuer == ca_certificate.subject
            and isinstance(ca_key, Ed25519PublicKey)
            and crl.is_signature_valid(ca_key)
        )
        if not genuine:
            raise IdentityError("the revocation list is not signed by this mesh's CA")
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        serials = frozenset(revoked.serial_number for revoked in crl)
        next_update = crl.next_update_utc
    except x509.ExtensionNotFound:
        raise IdentityError("the revocation list carries no CRL number") from None
    except (*_PARSE_ERRORS, InvalidSignature) as error:
        raise IdentityError(f"malformed revocation list: {error}") from None
    return RevocationList(der, number, serials, next_update)


def newer_trust(trust: TrustAnchor, crl: RevocationList) -> TrustAnchor | None:
    """``trust`` with ``crl`` in force, or None if ``crl`` is not newer than the list in force
    (a replayed or older list changes nothing)."""
    if crl.number <= trust.crl_number:
        return None
    return TrustAnchor(trust.ca_certificate, crl.revoked_serials, crl.next_update, crl.number)


def ca_publisher(ca_certificate: x509.Certificate) -> PeerIdentity:
    """Who a record the mesh CA signed itself is charged to in a record store: the CA's key,
    under a datacenter and region no member can have."""
    key = ca_certificate.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError("the mesh CA key is not Ed25519")
    return PeerIdentity(
        node_id=node_id_from_public_key(key),
        datacenter=CA_DATACENTER,
        region=CA_REGION,
        role=Role.CLIENT,
        serial=ca_certificate.serial_number,
        not_before=ca_certificate.not_valid_before_utc,
        not_after=ca_certificate.not_valid_after_utc,
    )
