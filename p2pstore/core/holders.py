"""An object's placement: the union of its holders' signed receipts, and the record relaying them.

Strategy: who holds a fragment is the holder's word alone (``core.receipts``), so a placement is
not a table anyone may overwrite but a set of receipts, :class:`Holdings`, that only grows by
union (commutative, associative, idempotent: a CRDT) and is read at ``now`` through
:meth:`Holdings.view`:

* per (holder, position) the holder's latest statement wins: the largest ``(issued_ms,
  missing, expires_ms, signature)``, so at the same instant "missing" beats "held" and the
  signature breaks any remaining tie;
* a statement counts only while its receipt is unexpired (and not issued more than the clock
  skew in the future) and its holder has a certificate the mesh CA signed, in date, unrevoked
  and of a node: a revoked holder's receipts stop counting at once, so its shares get repaired;
* a position's holders are those whose winning statement is "held", freshest first, minus
  what the reader excludes on its own evidence (:class:`LocalEvidence`: a failed audit).

So a holder leaves a position only by its own later "missing", by the expiry of its receipt,
or in one reader's view on that reader's evidence; a forged or stale record adds at most what
a genuine holder signed and can hide nothing.  Receipts are checked when they enter (signature
by the key of a certificate naming the holder, object, positions and fragment ids:
:func:`~p2pstore.core.receipts.check_receipt`); what depends on time and trust is decided by
each view.

The PLACEMENT record's value is a container relaying receipts: canonical msgpack
``[PLACEMENT_FORMAT, object_id, n, [certificate DER, ...], [receipt, ...]]`` with one
certificate per holder it names.  Its publisher's signature vouches for nothing: readers merge
the containers of every publisher found under the object's key, never "highest sequence
wins".  :meth:`Holdings.encode` builds a bounded one from what the builder verified: only
statements that win somewhere (superseded and expired receipts are dropped), at most
:data:`MAX_RECEIPTS_PER_HOLDER` per holder, a holder's "missing" relayed as well as its
"held" (it must beat older "held" receipts in other publishers' containers).  Format 1 (the
unsigned holder table before receipts) is refused with a message saying to re-put the object.
Pure.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import msgpack
from cryptography import x509

from p2pstore.core.placement import Candidate
from p2pstore.core.placement_view import (
    OBJECT_ID_BYTES,
    Exclusion,
    Statement,
)
from p2pstore.core.placement_view import (  # net/client.py imports Placement from here
    Placement as Placement,  # noqa: PLC0414
)
from p2pstore.core.receipts import (
    CheckedReceipt,
    Receipt,
    certificate_identity,
    check_receipt,
    decode_receipt,
)
from p2pstore.core.records import MAX_SKEW, RULES, RecordKind
from p2pstore.errors import IntegrityError, LocalProtocolError, PeerRefused, RemoteProtocolError
from p2pstore.identity import NodeId, PeerIdentity, Role, TrustAnchor, short_id

PLACEMENT_FORMAT: Final = 2
LEGACY_FORMAT: Final = 1
MAX_CERTIFICATES: Final = 1024
"""Certificates one container may carry (one per holder it names)."""
MAX_RECEIPTS: Final = 8192
"""Receipts one container may carry."""
MAX_RECEIPTS_PER_HOLDER: Final = 64
"""Receipts of one holder a builder relays: an honest holder's latest check is one receipt per
1024 positions, so this bounds only what a holder signing receipt after receipt can make a
relay carry; readers ignore any beyond it in one record, so a record costs its reader at
most this many signature checks per holder it names."""
MAX_RECORDS_REMEMBERED: Final = 256
"""Record values whose digests a :class:`Holdings` remembers as merged."""

_Key = tuple[int, int, int, bytes]
"""(issued_ms, 1 if missing else 0, expires_ms, signature): the larger statement wins."""


class Holdings:
    """The receipts known for one object, and the certificates that verify them (a CRDT; see
    the module docstring).  ``fragment_ids[chunk][share]`` are the manifest's ids."""

    __slots__ = ("_certificates", "_ids", "_read", "_receipts", "chunk_count", "n", "object_id")
    # _certificates: DER -> (parsed, identity), every holder certificate seen (only the mesh
    # CA makes them, so they cannot be flooded); a holder counts if one of its is valid.

    def __init__(self, object_id: bytes, fragment_ids: Sequence[Sequence[bytes]]) -> None:
        """Raises :class:`LocalProtocolError` for a malformed id or table."""
        if len(object_id) != OBJECT_ID_BYTES or not fragment_ids:
            raise LocalProtocolError("holdings need a 32-byte object id and its fragment ids")
        self.object_id = object_id
        self.n = len(fragment_ids[0])
        if any(len(row) != self.n for row in fragment_ids):
            raise LocalProtocolError(f"every chunk has n={self.n} fragment ids")
        self.chunk_count = len(fragment_ids)
        self._ids = tuple(fragment_id for row in fragment_ids for fragment_id in row)
        self._receipts: dict[bytes, CheckedReceipt] = {}
        self._certificates: dict[bytes, tuple[x509.Certificate, PeerIdentity]] = {}
        self._read: set[bytes] = set()
        """Digests of the record values merged already: one read again (a steward's next
        round) costs a hash, not a signature check per receipt."""

    def __len__(self) -> int:
        return len(self._receipts)

    def fragment_id(self, position: int) -> bytes | None:
        """The manifest's id at ``position`` (None beyond the object)."""
        return self._ids[position] if 0 <= position < len(self._ids) else None

    def position(self, chunk: int, share: int) -> int:
        return chunk * self.n + share

    def receipts(self) -> list[Receipt]:
        """Every receipt held, by holder then issue time."""
        found = [checked.receipt for checked in self._receipts.values()]
        return sorted(found, key=lambda r: (r.holder, r.issued_ms, r.signature))

    # -- growing ----------------------------------------------------------------------------

    def add(self, receipt: Receipt, certificate_der: bytes) -> CheckedReceipt:
        """Check ``receipt`` against its holder's certificate and keep both.

        Raises :class:`RemoteProtocolError` or :class:`IntegrityError` naming what is wrong
        (nothing is kept then).
        """
        known = self._receipts.get(receipt.signature)
        if known is not None and known.receipt == receipt:  # a record read again, a relay's copy
            if certificate_der not in self._certificates:
                entry = certificate_identity(certificate_der)
                if entry[1].node_id == receipt.holder:
                    self._certificates[certificate_der] = entry
            return known
        certificate, identity = self._certificate(certificate_der)
        if identity.node_id != receipt.holder:
            raise RemoteProtocolError(
                f"{receipt.describe()} comes with the certificate of node "
                f"{short_id(identity.node_id)}"
            )
        checked = check_receipt(receipt, certificate, self.object_id, self.fragment_id)
        self._receipts[receipt.signature] = checked
        self._certificates[certificate_der] = (certificate, identity)
        return checked

    def _certificate(self, der: bytes) -> tuple[x509.Certificate, PeerIdentity]:
        known = self._certificates.get(der)
        return known if known is not None else certificate_identity(der)

    def add_container(self, value: bytes) -> list[str]:
        """Merge a placement record's value; returns why anything in it was ignored (it can
        come from anyone, so nothing in it raises)."""
        digest = hashlib.sha256(value).digest()
        if digest in self._read:
            return []
        try:
            certificates, receipts = self._unpack(value)
        except RemoteProtocolError as exc:
            return [str(exc)]
        if len(self._read) >= MAX_RECORDS_REMEMBERED:
            self._read.clear()
        self._read.add(digest)
        problems: list[str] = []
        per_holder: dict[bytes, int] = {}
        by_holder: dict[bytes, list[bytes]] = {}
        for der in certificates:
            try:
                if not isinstance(der, bytes):
                    raise RemoteProtocolError("a certificate is not bytes")
                _, identity = self._certificate(der)
            except RemoteProtocolError as exc:
                problems.append(f"placement record: {exc}")
                continue
            by_holder.setdefault(identity.node_id, []).append(der)
        for raw in receipts:
            try:
                if not isinstance(raw, bytes):
                    raise RemoteProtocolError("a receipt is not bytes")
                receipt = decode_receipt(raw)
                ders = by_holder.get(receipt.holder)
                if not ders:
                    raise RemoteProtocolError(
                        f"{receipt.describe()} comes without its holder's certificate"
                    )
                per_holder[receipt.holder] = per_holder.get(receipt.holder, 0) + 1
                if per_holder[receipt.holder] > MAX_RECEIPTS_PER_HOLDER:
                    raise RemoteProtocolError(
                        f"{receipt.describe()}: more than {MAX_RECEIPTS_PER_HOLDER} receipts of "
                        "one holder in one record"
                    )
                self.add(receipt, ders[0])
            except (RemoteProtocolError, IntegrityError) as exc:
                problems.append(f"placement record: {exc}")
                continue
            for der in ders[1:]:
                self._certificates[der] = self._certificate(der)
        return problems

    def _unpack(self, value: bytes) -> tuple[list[object], list[object]]:
        """A container's certificates and receipts, not yet checked.  Raises
        :class:`RemoteProtocolError` saying why the whole record is ignored."""
        try:
            items = msgpack.unpackb(
                value,
                raw=False,
                strict_map_key=True,
                max_bin_len=len(value),
                max_array_len=MAX_RECEIPTS + 8,
            )
        except (ValueError, msgpack.UnpackException) as exc:
            raise RemoteProtocolError(f"a placement record is not msgpack: {exc}") from None
        if isinstance(items, list) and items and items[0] == LEGACY_FORMAT:
            raise RemoteProtocolError(
                f"ignoring a placement record of object {self.object_id.hex()[:16]} in format "
                f"{LEGACY_FORMAT} (holders without signed receipts, written before this "
                "version): put the object again to store it with receipts"
            )
        if not (isinstance(items, list) and len(items) == 5 and items[0] == PLACEMENT_FORMAT):
            raise RemoteProtocolError("a placement record has an unknown layout")
        _, object_id, n, certificates, receipts = items
        if object_id != self.object_id or n != self.n:
            raise RemoteProtocolError("a placement record is for another object or coding")
        if not (isinstance(certificates, list) and isinstance(receipts, list)):
            raise RemoteProtocolError("a placement record has malformed lists")
        if len(certificates) > MAX_CERTIFICATES or len(receipts) > MAX_RECEIPTS:
            raise RemoteProtocolError(
                "a placement record carries more certificates or receipts than allowed"
            )
        return certificates, receipts

    def merge(self, other: Holdings) -> None:
        """Take everything ``other`` knows (the union).  Raises :class:`LocalProtocolError`
        for another object."""
        if (other.object_id, other._ids) != (self.object_id, self._ids):
            raise LocalProtocolError("cannot merge the holdings of different objects")
        self._receipts.update(other._receipts)
        self._certificates.update(other._certificates)

    def prune(self, now: float) -> int:
        """Forget expired receipts, and receipts superseded at every position they state by a
        later one of the same holder that expires no earlier (no view from ``now`` on
        changes); returns how many were dropped."""
        now_ms = math.floor(now * 1000)
        latest: dict[tuple[bytes, int], tuple[_Key, CheckedReceipt]] = {}
        for checked in self._receipts.values():
            if checked.receipt.issued_ms > now_ms + MAX_SKEW * 1000:
                continue  # not counted yet, so it supersedes nothing yet
            for missing, positions in ((False, checked.held), (True, checked.missing)):
                key = _key(checked, missing)
                for position in positions:
                    slot = (checked.receipt.holder, position)
                    best = latest.get(slot)
                    if best is None or key > best[0]:
                        latest[slot] = (key, checked)
        keep: dict[bytes, CheckedReceipt] = {}
        for signature, checked in self._receipts.items():
            receipt = checked.receipt
            if receipt.expires_ms <= now_ms:
                continue
            needed = any(
                (best := latest.get((receipt.holder, p))) is None
                or best[1] is checked
                or best[1].receipt.expires_ms < receipt.expires_ms
                for p in (*checked.held, *checked.missing)
            )
            if needed:
                keep[signature] = checked
        dropped = len(self._receipts) - len(keep)
        self._receipts = keep
        holders = {checked.receipt.holder for checked in keep.values()}
        self._certificates = {
            der: entry for der, entry in self._certificates.items() if entry[1].node_id in holders
        }
        return dropped

    # -- reading ----------------------------------------------------------------------------

    def valid_holders(self, now: float, trust: TrustAnchor) -> dict[bytes, PeerIdentity]:
        """Holders with a node certificate the mesh CA accepts at ``now``."""
        moment = datetime.fromtimestamp(now, UTC)
        valid: dict[bytes, PeerIdentity] = {}
        for der in sorted(self._certificates):
            certificate, identity = self._certificates[der]
            if identity.node_id in valid or identity.role is not Role.NODE:
                continue
            try:
                trust.verify(certificate, moment)
            except PeerRefused:
                continue
            valid[identity.node_id] = identity
        return valid

    def statements(self, now: float, trust: TrustAnchor) -> dict[tuple[bytes, int], Statement]:
        """Each valid holder's winning statement per position at ``now``."""
        winners = self._winners(now, self.valid_holders(now, trust))
        return {slot: Statement(key[1] == 0, key[0], key[2]) for slot, (key, _) in winners.items()}

    def view(
        self, now: float, trust: TrustAnchor, *, exclude: Exclusion | None = None
    ) -> Placement:
        """The placement at ``now`` (see the module docstring)."""
        return self._placement(now, trust, exclude, counted=True)

    def gone(
        self, now: float, trust: TrustAnchor, *, exclude: Exclusion | None = None
    ) -> Placement:
        """The holders that no longer count, per position: their latest statement there is
        "missing", or ``exclude`` says so (whom a repair must not place the share on again)."""
        return self._placement(now, trust, exclude, counted=False)

    def _placement(
        self, now: float, trust: TrustAnchor, exclude: Exclusion | None, *, counted: bool
    ) -> Placement:
        valid = self.valid_holders(now, trust)
        winners = self._winners(now, valid)
        by_position: dict[int, list[tuple[int, bytes]]] = {}
        address: dict[bytes, tuple[int, str]] = {}
        for (holder, position), (key, checked) in winners.items():
            receipt = checked.receipt
            if address.get(holder, (-1, ""))[0] < receipt.issued_ms:
                address[holder] = (receipt.issued_ms, receipt.address)
            counts = key[1] == 0 and not (exclude is not None and exclude(holder, position))
            if counts == counted:
                by_position.setdefault(position, []).append((-receipt.issued_ms, holder))
        candidates = {
            holder: Candidate(
                holder, address[holder][1], valid[holder].datacenter, valid[holder].region
            )
            for holder in address
        }
        rows: list[tuple[Candidate | None, ...]] = []
        others: list[tuple[tuple[Candidate, ...], ...]] = []
        for chunk in range(self.chunk_count):
            row: list[Candidate | None] = []
            extra: list[tuple[Candidate, ...]] = []
            for share in range(self.n):
                found = sorted(by_position.get(self.position(chunk, share), []))
                row.append(candidates[found[0][1]] if found else None)
                extra.append(tuple(candidates[h] for h in sorted(h for _, h in found[1:])))
            rows.append(tuple(row))
            others.append(tuple(extra))
        return Placement(self.object_id, self.n, tuple(rows), tuple(others))

    def encode(
        self,
        now: float,
        trust: TrustAnchor,
        *,
        exclude: Exclusion | None = None,
        max_per_holder: int = MAX_RECEIPTS_PER_HOLDER,
    ) -> bytes:
        """A placement record's value relaying what is valid at ``now`` (see the module
        docstring).  Raises :class:`LocalProtocolError` if it would not fit the record."""
        valid = self.valid_holders(now, trust)
        chosen: dict[bytes, dict[bytes, Receipt]] = {}
        for (holder, position), (key, checked) in self._winners(now, valid).items():
            if key[1] == 0 and exclude is not None and exclude(holder, position):
                continue
            chosen.setdefault(holder, {})[checked.receipt.signature] = checked.receipt
        receipts: list[bytes] = []
        certificates: list[bytes] = []
        for holder in sorted(chosen):
            newest = sorted(chosen[holder].values(), key=lambda r: (-r.issued_ms, r.signature))
            receipts.extend(r.encode() for r in newest[:max_per_holder])
            certificates.append(self._certificate_der(valid[holder]))
        value: bytes = msgpack.packb(
            [PLACEMENT_FORMAT, self.object_id, self.n, certificates, receipts], use_bin_type=True
        )
        limit = RULES[RecordKind.PLACEMENT].max_value
        if len(value) > limit or len(receipts) > MAX_RECEIPTS:
            raise LocalProtocolError(
                f"the placement of object {self.object_id.hex()[:16]} takes {len(value)} bytes "
                f"in {len(receipts)} receipts, more than a placement record's {limit}"
            )
        return value

    def _certificate_der(self, identity: PeerIdentity) -> bytes:
        return next(
            der for der in sorted(self._certificates) if self._certificates[der][1] == identity
        )

    def _winners(
        self, now: float, valid: dict[bytes, PeerIdentity]
    ) -> dict[tuple[bytes, int], tuple[_Key, CheckedReceipt]]:
        now_ms = math.floor(now * 1000)
        latest_issue = now_ms + MAX_SKEW * 1000
        winners: dict[tuple[bytes, int], tuple[_Key, CheckedReceipt]] = {}
        for checked in self._receipts.values():
            receipt = checked.receipt
            if (
                receipt.holder not in valid
                or receipt.expires_ms <= now_ms
                or receipt.issued_ms > latest_issue
            ):
                continue
            for missing, positions in ((False, checked.held), (True, checked.missing)):
                key = _key(checked, missing)
                for position in positions:
                    slot = (NodeId(receipt.holder), position)
                    best = winners.get(slot)
                    if best is None or key > best[0]:
                        winners[slot] = (key, checked)
        return winners


def _key(checked: CheckedReceipt, missing: bool) -> _Key:
    receipt = checked.receipt
    return (receipt.issued_ms, int(missing), receipt.expires_ms, receipt.signature)
