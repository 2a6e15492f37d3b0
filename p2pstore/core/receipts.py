"""Storage receipts: a holder's signed statement of which fragments of an object it holds.

Why: "I hold fragment F" is a claim only the holder has authority over (DESIGN, "Trust"), so it
signs it with its node key, the key its mesh certificate binds; anyone can relay a receipt and
anyone who uses it checks it against that certificate.  A placement is then the union of
receipts (``core.holders``), and a forged placement record can add only what a genuine holder
signed.

A receipt speaks about one object and states, for each position it mentions
(``position = chunk * n + share``), whether the holder has that fragment and it still verifies
(``held``) or not (``missing``).  It binds the fragment ids it speaks about through ``digest``
(sha256 of the ids in position order), so it cannot be replayed for another object's or another
version's fragments: whoever checks it has the manifest, hence the ids.  It also carries the
holder's own address (a dial hint; the dialler still expects the holder's node id) and when it
was issued and expires, in Unix milliseconds.

Lifetime (:data:`RECEIPT_TTL`, 3 days): long enough that a holder silent for the longest grace
period (hours) plus a few check intervals still counts while the steward decides, short enough
that a vanished holder lapses on its own.  Holders sign on every store and every steward
check, so an object's stewards renew receipts each round; a holder signs with a fixed lifetime,
so a later receipt never expires before an earlier one.

Encoding: canonical msgpack ``[RECEIPT_FORMAT, object_id, holder, address, issued_ms,
expires_ms, held, missing, digest, signature]``; ``held`` and ``missing`` are packed positions
(:func:`pack_positions`: sorted, as LEB128 gaps, ~1 byte per position for one fragment per
chunk).  The signature covers :data:`RECEIPT_DOMAIN` + the same array without the signature.
Pure: time comes in as ``now``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2pstore.errors import IntegrityError, LocalProtocolError, PeerRefused, RemoteProtocolError
from p2pstore.identity import (
    NODE_ID_BYTES,
    NodeCredentials,
    PeerIdentity,
    identity_from_certificate,
    node_id_from_public_key,
    short_id,
    verify_signature,
)
from p2pstore.wire.schema import Record, decode_record, record, schema_of

RECEIPT_DOMAIN: Final = b"p2pstore-receipt-v1\0"
RECEIPT_FORMAT: Final = 1
HOUR_MS: Final = 3600 * 1000
RECEIPT_TTL: Final = 3 * 24 * 3600
"""Seconds a receipt is valid for (see the module docstring)."""
MAX_RECEIPT_TTL_MS: Final = 7 * 24 * HOUR_MS
"""A receipt living longer than this is refused (a holder's clock or code is wrong)."""
MAX_POSITIONS: Final = 1024
"""Positions one receipt states (what one check asks; a holder of more signs several)."""
MAX_POSITION: Final = (1 << 32) - 1
MAX_PACKED: Final = 5 * MAX_POSITIONS
MAX_CERTIFICATE_DER: Final = 3 * 1024
OBJECT_ID_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64

Signer = NodeCredentials | Ed25519PrivateKey
"""What signs receipts: a node's credentials, or a bare key (tests forging receipts)."""


def pack_positions(positions: Sequence[int]) -> bytes:
    """Strictly increasing positions as LEB128: the first one, then each gap minus one.

    Raises :class:`LocalProtocolError` if they are not strictly increasing in 0..2^32-1.
    """
    out = bytearray()
    previous = -1
    for position in positions:
        if type(position) is not int or not previous < position <= MAX_POSITION:
            raise LocalProtocolError(
                f"positions must be strictly increasing ints in 0..{MAX_POSITION}"
            )
        value = position - previous - 1
        previous = position
        while value >= 0x80:
            out.append(0x80 | (value & 0x7F))
            value >>= 7
        out.append(value)
    return bytes(out)


def unpack_positions(data: bytes) -> tuple[int, ...]:
    """The positions :func:`pack_positions` packed.  Raises :class:`RemoteProtocolError` for a
    truncated or non-minimal varint or a position beyond 2^32-1 (one list, one encoding)."""
    positions: list[int] = []
    previous = -1
    value = shift = 0
    for index, byte in enumerate(data):
        if shift and byte == 0 and not byte & 0x80:
            raise RemoteProtocolError(f"packed positions: overlong varint at byte {index}")
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 35:
                raise RemoteProtocolError("packed positions: varint longer than 5 bytes")
            continue
        previous += value + 1
        if previous > MAX_POSITION:
            raise RemoteProtocolError(f"packed positions: position beyond {MAX_POSITION}")
        positions.append(previous)
        value = shift = 0
    if shift:
        raise RemoteProtocolError("packed positions: truncated varint")
    return tuple(positions)


def fragments_digest(fragment_ids: Sequence[bytes]) -> bytes:
    """What a receipt binds: sha256 over the fragment ids it states, in position order."""
    return hashlib.sha256(b"".join(fragment_ids)).digest()


@record
@dataclasses.dataclass(frozen=True, slots=True)
class Receipt(Record):
    """One holder's signed statement about positions of one object (see the module docstring).

    Raises :class:`LocalProtocolError` when built with malformed fields (decoding reports it as
    :class:`RemoteProtocolError`)."""

    object_id: bytes = dataclasses.field(
        metadata={"min_len": OBJECT_ID_BYTES, "max_len": OBJECT_ID_BYTES}
    )
    holder: bytes = dataclasses.field(metadata={"min_len": NODE_ID_BYTES, "max_len": NODE_ID_BYTES})
    address: str = dataclasses.field(metadata={"max_len": 255})
    issued_ms: int = dataclasses.field(metadata={"min": 0, "max": (1 << 62)})
    expires_ms: int = dataclasses.field(metadata={"min": 0, "max": (1 << 62)})
    held: bytes = dataclasses.field(metadata={"max_len": MAX_PACKED})
    missing: bytes = dataclasses.field(metadata={"max_len": MAX_PACKED})
    digest: bytes = dataclasses.field(metadata={"min_len": 32, "max_len": 32})
    signature: bytes = dataclasses.field(
        metadata={"min_len": SIGNATURE_BYTES, "max_len": SIGNATURE_BYTES}
    )

    def __post_init__(self) -> None:
        Record.__post_init__(self)
        if not 0 < self.expires_ms - self.issued_ms <= MAX_RECEIPT_TTL_MS:
            raise LocalProtocolError(
                f"a receipt lives 1 ms to {MAX_RECEIPT_TTL_MS // HOUR_MS} h, not "
                f"{self.expires_ms - self.issued_ms} ms"
            )
        try:
            held, missing = self.positions()
        except RemoteProtocolError as error:
            raise LocalProtocolError(str(error)) from None
        if not held and not missing:
            raise LocalProtocolError("a receipt states at least one position")
        if len(held) + len(missing) > MAX_POSITIONS:
            raise LocalProtocolError(f"a receipt states at most {MAX_POSITIONS} positions")
        if set(held) & set(missing):
            raise LocalProtocolError("a receipt cannot state a position both held and missing")

    def positions(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(held, missing) positions.  Raises :class:`RemoteProtocolError` if malformed."""
        return unpack_positions(self.held), unpack_positions(self.missing)

    def body(self) -> list[object]:
        """Every field but the signature, in wire order, after the format number."""
        return [RECEIPT_FORMAT, *schema_of(Receipt).values(self)[:-1]]

    def signed_bytes(self) -> bytes:
        """What the holder's signature covers."""
        packed: bytes = msgpack.packb(self.body(), use_bin_type=True)
        return RECEIPT_DOMAIN + packed

    def encode(self) -> bytes:
        """The canonical bytes (what messages and placement records carry)."""
        packed: bytes = msgpack.packb([*self.body(), self.signature], use_bin_type=True)
        return packed

    def describe(self) -> str:
        """``receipt of node ab12cd34 for object 0f1e2d3c4b5a6978``, for messages."""
        return f"receipt of node {short_id(self.holder)} for object {self.object_id.hex()[:16]}"


_FIELDS: Final = 1 + len(schema_of(Receipt).fields)


def decode_receipt(data: bytes) -> Receipt:
    """Parse a receipt's canonical bytes (its signature is not checked here).

    Raises :class:`RemoteProtocolError` naming the problem.
    """
    try:
        raw = msgpack.unpackb(
            data, raw=False, use_list=False, strict_map_key=True, max_bin_len=len(data)
        )
    except (ValueError, msgpack.UnpackException) as error:
        raise RemoteProtocolError(f"receipt is not msgpack: {error}") from None
    if type(raw) is not tuple or len(raw) != _FIELDS:
        raise RemoteProtocolError(f"receipt: expected an array of {_FIELDS} items")
    if raw[0] != RECEIPT_FORMAT or type(raw[0]) is not int:
        raise RemoteProtocolError(
            f"receipt format {raw[0]!r} is not {RECEIPT_FORMAT}: the holder runs another version"
        )
    receipt = decode_record(Receipt, raw[1:])
    if receipt.encode() != data:
        raise RemoteProtocolError("receipt is not canonically encoded msgpack")
    return receipt


def sign_receipt(
    signer: Signer,
    object_id: bytes,
    *,
    address: str,
    held: Mapping[int, bytes],
    missing: Mapping[int, bytes] | None = None,
    now: float,
    ttl: float = RECEIPT_TTL,
) -> Receipt:
    """Sign, as the holder ``signer``, that it holds the fragments ``held`` (position ->
    fragment id) of ``object_id`` and not those of ``missing``, at ``now`` (Unix seconds).

    Raises :class:`LocalProtocolError` for malformed positions, ids or lifetime.
    """
    missing = missing or {}
    private_key = signer.private_key if isinstance(signer, NodeCredentials) else signer
    holder = node_id_from_public_key(private_key.public_key())
    stated = sorted({**held, **missing}.items())
    if len(stated) != len(held) + len(missing):
        raise LocalProtocolError("a position cannot be both held and missing")
    issued = math.floor(now * 1000)
    unsigned = Receipt(
        object_id=object_id,
        holder=holder,
        address=address,
        issued_ms=issued,
        expires_ms=issued + math.floor(ttl * 1000),
        held=pack_positions(sorted(held)),
        missing=pack_positions(sorted(missing)),
        digest=fragments_digest([fragment_id for _, fragment_id in stated]),
        signature=bytes(SIGNATURE_BYTES),
    )
    return dataclasses.replace(unsigned, signature=private_key.sign(unsigned.signed_bytes()))


@dataclasses.dataclass(frozen=True, slots=True)
class CheckedReceipt:
    """A receipt whose signature, holder key and fragment ids were checked, with its positions
    decoded (what a placement keeps)."""

    receipt: Receipt
    held: tuple[int, ...]
    missing: tuple[int, ...]


def certificate_identity(der: bytes) -> tuple[x509.Certificate, PeerIdentity]:
    """Parse a holder certificate (no trust decision: :class:`TrustAnchor` makes that).

    Raises :class:`RemoteProtocolError` if it is not a well-formed p2pstore certificate.
    """
    if len(der) > MAX_CERTIFICATE_DER:
        raise RemoteProtocolError(f"a certificate of {len(der)} bytes is too large")
    try:
        certificate = x509.load_der_x509_certificate(der)
        return certificate, identity_from_certificate(certificate)
    except (ValueError, PeerRefused) as error:
        raise RemoteProtocolError(f"malformed holder certificate: {error}") from None


def check_receipt(
    receipt: Receipt,
    certificate: x509.Certificate,
    object_id: bytes,
    fragment_id: Callable[[int], bytes | None],
) -> CheckedReceipt:
    """Check everything about ``receipt`` that does not depend on time or trust: it is about
    ``object_id``, signed by the key of ``certificate`` whose node id is the holder, and its
    digest matches the fragment ids ``fragment_id(position)`` gives (None: no such position).

    Raises :class:`IntegrityError` for a bad signature or digest, :class:`RemoteProtocolError`
    for anything else wrong.  Whether the certificate is valid, unrevoked and a node's is for
    the reader to decide at the time it uses the receipt.
    """
    what = receipt.describe()
    if receipt.object_id != object_id:
        raise RemoteProtocolError(f"{what} is for another object than {object_id.hex()[:16]}")
    key = certificate.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise RemoteProtocolError(f"{what}: the holder certificate's key is not Ed25519")
    verify_signature(
        key, receipt.signed_bytes(), receipt.signature, expected_node_id=receipt.holder
    )
    held, missing = receipt.positions()
    ids = []
    for position in sorted((*held, *missing)):
        found = fragment_id(position)
        if found is None:
            raise RemoteProtocolError(f"{what} states position {position}, beyond the object")
        ids.append(found)
    if fragments_digest(ids) != receipt.digest:
        raise IntegrityError(
            f"{what} speaks of other fragments than the manifest's: another version of the "
            f"object, or forged"
        )
    return CheckedReceipt(receipt, held, missing)
