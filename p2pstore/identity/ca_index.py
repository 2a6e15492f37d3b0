"""The mesh CA's records: the index of issued certificates (``issued.json``), so ``p2pstore ca
list`` and ``ca revoke`` work by serial, and the revocations its signed CRL lists."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2pstore.errors import IdentityError
from p2pstore.identity.certificates import (
    Role,
    as_utc,
    format_serial,
    parse_serial,
    validate_datacenter,
    validate_region,
    validate_tenant,
)
from p2pstore.identity.credentials import PUBLIC_FILE_MODE, replace_file
from p2pstore.identity.nodeid import NodeId, parse_node_id
from p2pstore.identity.profile import authority_key_identifier

CRL_VALIDITY = timedelta(days=30)
_INDEX_FORMAT = 1
_REASONS = {f.value: f for f in x509.ReasonFlags if f is not x509.ReasonFlags.remove_from_crl}


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """One entry of the CA's issued index (what ``p2pstore ca list`` shows)."""

    serial: int
    name: str | None  # the file stem it was written as; None when issued in memory
    node_id: NodeId
    datacenter: str
    region: str
    role: Role
    not_after: datetime
    tenant: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The index file's JSON form of this entry."""
        return {
            "tenant": self.tenant,
            "serial": format_serial(self.serial),
            "name": self.name,
            "node_id": self.node_id.hex(),
            "datacenter": self.datacenter,
            "region": self.region,
            "role": self.role.value,
            "not_after": self.not_after.isoformat(),
        }

    @classmethod
    def from_json(cls, entry: object) -> IssuedCertificate:
        """Parse an index entry.  Raises :class:`IdentityError` or ``ValueError`` if invalid."""
        if not isinstance(entry, dict):
            raise IdentityError(f"index entry {entry!r} is not an object")
        name = entry.get("name")
        tenant = entry.get("tenant")
        return cls(
            tenant=None if tenant is None else validate_tenant(str(tenant)),
            serial=parse_serial(str(entry["serial"])),
            name=None if name is None else str(name),
            node_id=parse_node_id(str(entry["node_id"])),
            datacenter=validate_datacenter(str(entry["datacenter"])),
            region=validate_region(str(entry["region"])),
            role=Role(entry["role"]),
            not_after=as_utc(datetime.fromisoformat(str(entry["not_after"])), "not_after"),
        )


@dataclass(frozen=True, slots=True)
class Revocation:
    """One certificate the CRL revokes."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None


def parse_reason(reason: str | None) -> x509.ReasonFlags | None:
    """Map an RFC 5280 reason name (``keyCompromise``, ``superseded``, ...) to its flag.

    Raises :class:`IdentityError` listing the accepted names otherwise.
    """
    if reason is None:
        return None
    flag = _REASONS.get(reason)
    if flag is None:
        raise IdentityError(
            f"unknown revocation reason {reason!r}: use one of {', '.join(sorted(_REASONS))}"
        )
    return flag


def read_index(path: Path) -> dict[int, IssuedCertificate]:
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        version = document["format"]
        entries = [IssuedCertificate.from_json(entry) for entry in document["issued"]]
    except (OSError, ValueError, KeyError, TypeError, IdentityError) as error:
        raise IdentityError(
            f"the CA's issued index {path} is unreadable or corrupt ({error}); restore it from "
            f"a backup"
        ) from error
    if version != _INDEX_FORMAT:
        raise IdentityError(
            f"the CA's issued index {path} has format {version!r}; this p2pstore reads format "
            f"{_INDEX_FORMAT}: upgrade p2pstore"
        )
    return {entry.serial: entry for entry in entries}


def write_index(path: Path, issued: dict[int, IssuedCertificate]) -> None:
    document = {
        "format": _INDEX_FORMAT,
        "issued": [issued[serial].to_json() for serial in sorted(issued)],
    }
    replace_file(path, (json.dumps(document, indent=1) + "\n").encode(), PUBLIC_FILE_MODE)


def sign_crl(
    key: Ed25519PrivateKey,
    ca_certificate: x509.Certificate,
    revocations: list[Revocation],
    now: datetime,
    number: int,
) -> x509.CertificateRevocationList:
    """The CA's signed revocation list: these revocations, next update in ``CRL_VALIDITY``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject)
        .last_update(now)
        .next_update(now + CRL_VALIDITY)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(authority_key_identifier(ca_certificate), critical=False)
    )
    for revocation in revocations:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(revocation.serial)
            .revocation_date(revocation.revoked_at)
        )
        if revocation.reason is not None:
            entry = entry.add_extension(x509.CRLReason(revocation.reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(key, algorithm=None)


def validity(valid_days: int) -> timedelta:
    """A certificate's lifetime; raises :class:`IdentityError` below one day."""
    if valid_days < 1:
        raise IdentityError(f"validity must be at least 1 day, got {valid_days}")
    return timedelta(days=valid_days)


def ed25519_key(certificate: x509.Certificate) -> Ed25519PublicKey:
    """The certificate's Ed25519 key; raises :class:`IdentityError` for any other kind."""
    key = certificate.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError(f"certificate key is {type(key).__name__}, expected Ed25519")
    return key


_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_file_name(name: str) -> str:
    """An identity's name, which becomes ``NAME.key``, ``NAME.csr`` and ``NAME.crt``: no path.
    Raises :class:`IdentityError`."""
    if _FILE_NAME.fullmatch(name) is None:
        raise IdentityError(
            f"invalid certificate name {name!r}: use 1 to 64 letters, digits, '.', '_' or "
            f"'-', starting with a letter or digit (it becomes <name>.key and <name>.crt)"
        )
    return name
