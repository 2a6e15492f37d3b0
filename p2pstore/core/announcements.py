"""Peer announcements: what a node tells the mesh about itself, and how that is checked.

Why a record at all, when TLS already tells a peer who it is talking to: placement needs to know
about nodes it has never connected to (their datacenter, region and free capacity), and asks the
DHT for them.  An announcement is stored under its publisher's own node id and carries the
publisher's certificate, so any reader checks it against the mesh CA without dialling the node:
the datacenter and region it claims must be the ones the CA wrote into the certificate, so a
node cannot move itself into a territory it is not in.  Free capacity is the node's own word
(nothing can check it); placement treats it as a hint.

The value is a canonical msgpack array ``[ANNOUNCEMENT_FORMAT, address, datacenter, region,
free_bytes, certificate_der]``; decoding refuses anything else, including a non-canonical
encoding of the same fields, so one announcement has exactly one byte string.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Final, NoReturn

import msgpack

from p2pstore.errors import IdentityError, LocalProtocolError, PeerRefused, RemoteProtocolError
from p2pstore.identity import (
    PeerIdentity,
    Role,
    TrustAnchor,
    short_id,
    validate_datacenter,
    validate_region,
)
from p2pstore.wire.schema import Record, decode_record, record, schema_of

ANNOUNCEMENT_FORMAT: Final = 1
"""The first item of an encoded announcement; a new layout gets a new number."""

MAX_CERTIFICATE_DER: Final = 3 * 1024
"""Largest certificate an announcement carries (a p2pstore node certificate is ~600 bytes)."""

MAX_FREE_BYTES: Final = (1 << 63) - 1
_FIELDS: Final = 6  # the format number and the five fields


@record
@dataclasses.dataclass(frozen=True, slots=True)
class Announcement(Record):
    """A node's own description: where to dial it, where it is, how much room it has.

    ``datacenter`` and ``region`` must repeat what ``certificate_der`` says (checked by
    :func:`announcement_mismatch` once the certificate is verified).  Raises
    :class:`LocalProtocolError` when a field is malformed.
    """

    address: str = dataclasses.field(metadata={"min_len": 1, "max_len": 255})
    datacenter: str = dataclasses.field(metadata={"min_len": 1, "max_len": 64})
    region: str = dataclasses.field(metadata={"min_len": 2, "max_len": 16})
    free_bytes: int = dataclasses.field(metadata={"min": 0, "max": MAX_FREE_BYTES})
    certificate_der: bytes = dataclasses.field(
        metadata={"min_len": 1, "max_len": MAX_CERTIFICATE_DER}
    )

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        try:
            validate_datacenter(self.datacenter)
            validate_region(self.region)
        except IdentityError as error:
            raise LocalProtocolError(f"announcement: {error}") from None

    def encode(self) -> bytes:
        """The canonical bytes that go into a record's value."""
        fields = schema_of(Announcement).values(self)
        return msgpack.packb([ANNOUNCEMENT_FORMAT, *fields], use_bin_type=True)  # type: ignore[no-any-return]


def decode_announcement(data: bytes) -> Announcement:
    """Parse an announcement record's value.

    Raises :class:`RemoteProtocolError` naming the problem if ``data`` is not msgpack, not the
    canonical encoding, of another format, or has a field out of bounds.
    """
    raw = _unpack(data)
    if type(raw) is not tuple or len(raw) != _FIELDS:
        raise RemoteProtocolError(
            f"announcement: expected an array of {_FIELDS} items, got {type(raw).__name__}"
            + (f" of {len(raw)}" if type(raw) is tuple else "")
        )
    if raw[0] != ANNOUNCEMENT_FORMAT or type(raw[0]) is not int:
        raise RemoteProtocolError(
            f"announcement format {raw[0]!r} is not {ANNOUNCEMENT_FORMAT}: the publisher runs "
            f"another p2pstore version"
        )
    announcement = decode_record(Announcement, raw[1:])
    if announcement.encode() != data:
        raise RemoteProtocolError("announcement is not canonically encoded msgpack")
    return announcement


def verify_announcement(
    data: bytes, publisher: bytes, trust: TrustAnchor, now: float
) -> tuple[Announcement, PeerIdentity]:
    """Parse an announcement by ``publisher`` and check it against the mesh CA at ``now``
    (Unix seconds); return it with what its certificate proves.

    Raises :class:`RemoteProtocolError` if it is malformed, its certificate is refused (wrong
    CA, revoked, expired, ...), or the certificate contradicts it (:func:`announcement_mismatch`).
    """
    announcement = decode_announcement(data)
    try:
        certificate = trust.verify_der(
            announcement.certificate_der, datetime.fromtimestamp(now, UTC)
        )
    except PeerRefused as error:
        raise RemoteProtocolError(
            f"announcement by node {short_id(publisher)} carries a certificate the mesh CA "
            f"refuses ({error.reason}): {error}"
        ) from None
    mismatch = announcement_mismatch(announcement, publisher, certificate)
    if mismatch is not None:
        raise RemoteProtocolError(mismatch)
    return announcement, certificate


def announcement_mismatch(
    announcement: Announcement, publisher: bytes, certificate: PeerIdentity
) -> str | None:
    """What is wrong between an announcement, its publisher and its (verified) certificate.

    Returns None when the certificate is a node certificate of ``publisher`` that names the
    announced datacenter and region, else a sentence saying which claim is false.
    """
    who = f"announcement by node {short_id(publisher)}"
    if certificate.node_id != publisher:
        return (
            f"{who} carries the certificate of node {short_id(certificate.node_id)}: a node "
            f"announces only itself, with its own certificate"
        )
    if certificate.role is not Role.NODE:
        return f"{who} carries a {certificate.role.value} certificate: only nodes serve the mesh"
    if announcement.region != certificate.region:
        return (
            f"{who} claims region {announcement.region} but its certificate says "
            f"{certificate.region}"
        )
    if announcement.datacenter != certificate.datacenter:
        return (
            f"{who} claims datacenter {announcement.datacenter} but its certificate says "
            f"{certificate.datacenter}"
        )
    return None


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _unpack(data: bytes) -> object:
    if type(data) is not bytes:
        raise RemoteProtocolError(f"announcement: expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            max_str_len=len(data),
            max_bin_len=len(data),
            max_array_len=_FIELDS,
            max_map_len=0,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except msgpack.exceptions.ExtraData:
        raise RemoteProtocolError("announcement: trailing bytes after the array") from None
    except (ValueError, TypeError, OverflowError, msgpack.exceptions.UnpackException) as exc:
        # UnicodeDecodeError and StackError are ValueErrors too.
        raise RemoteProtocolError(f"announcement is not valid msgpack: {exc}") from None


def announcement_problem(
    announcement: Announcement, certificate_der: bytes, certificate: PeerIdentity
) -> str | None:
    """Why an announcement does not go with its record's certificate, or None."""
    who = f"announcement by {certificate.describe()}"
    if certificate.role is not Role.NODE:
        return f"{who}: only nodes announce themselves (a client serves no one)"
    if announcement.certificate_der != certificate_der:
        return f"{who} carries another certificate in its value than in its record"
    return None
