"""Placements over the network: asking holders for receipts, reading every publisher's
placement record, publishing our own.

Strategy: the rules live in ``core.holders`` (a placement is the union of checked receipts);
this module only moves them.  A holder is asked with one ``StateFragments`` for up to
``MAX_IDS_PER_QUERY`` positions, over any number of objects, and its answer is one of:
receipts that state every position asked (checked against the manifest's ids and the
holder's certificate, and merged into each object's :class:`Holdings`), "leaving", silence
(unreachable, timed out), or a failure (an error reply, a reply that is not a set of valid
receipts for exactly what was asked): the caller counts a failure as the holder's word that
it has none of them, for this round.  Reading merges the records of every publisher;
publishing signs our own container (what we verified), never someone else's merge.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from p2pstore.core.holders import Holdings
from p2pstore.core.placement import Candidate
from p2pstore.core.placement_view import Exclusion
from p2pstore.core.receipts import CheckedReceipt, Receipt, decode_receipt
from p2pstore.core.records import RecordKind, manifest_key
from p2pstore.core.steward_round import Said
from p2pstore.errors import (
    IntegrityError,
    NodeLeaving,
    PeerRefused,
    PeerUnreachable,
    RemoteError,
    RemoteProtocolError,
    StoreError,
)
from p2pstore.identity import short_id
from p2pstore.net.dht import Dht
from p2pstore.net.fragments import state_fragments
from p2pstore.store import FragmentStore
from p2pstore.wire import PositionQuery, SignedRecord, StateFragments, StateFragmentsReply

log = logging.getLogger("p2pstore.client")


@dataclass(frozen=True, slots=True)
class Ask:
    """Positions of one object to ask a holder about."""

    holdings: Holdings
    positions: tuple[int, ...]


@dataclass
class Answer:
    """A holder's answer: how, the checked receipts (one per :class:`Ask`, in order, when it
    STATED), and what was wrong otherwise."""

    said: Said
    receipts: list[CheckedReceipt] = field(default_factory=list)
    problem: str = ""

    def held(self) -> set[tuple[bytes, int]]:
        """(object id, position) the holder stated held."""
        return {(c.receipt.object_id, p) for c in self.receipts for p in c.held}


async def ask_holder(
    dht: Dht,
    holder: Candidate,
    asks: Sequence[Ask],
    *,
    timeout: float,
    local_store: FragmentStore | None = None,
    run_sync: Callable[..., Awaitable[list[Receipt]]] | None = None,
) -> Answer:
    """Ask ``holder`` to state ``asks`` (at most ``MAX_IDS_PER_QUERY`` positions in all);
    valid receipts are merged into each ask's holdings.  With ``local_store``, this node is the
    holder and signs from its own store (through ``run_sync``, e.g. in a worker thread).
    Raises nothing for what the holder does."""
    node = dht.node
    queries = tuple(
        PositionQuery(
            object_id=ask.holdings.object_id,
            positions=ask.positions,
            fragment_ids=tuple(_fragment_id(ask.holdings, p) for p in ask.positions),
        )
        for ask in asks
    )
    if local_store is not None and holder.node_id == node.identity.node_id:
        args = (local_store, node.credentials, node.address, queries, dht.wall_clock())
        if run_sync is None:
            signed = state_fragments(*args)
        else:
            signed = await run_sync(state_fragments, *args)
        raw = tuple(receipt.encode() for receipt in signed)
        certificate = node.credentials.certificate_der()
    else:
        reply = await _call(dht, holder, queries, timeout)
        if isinstance(reply, Answer):
            return reply
        raw, certificate = reply.receipts, reply.certificate
    checked: list[CheckedReceipt] = []
    for ask, data in zip(asks, raw, strict=True):
        try:
            receipt = decode_receipt(data)
            _check_answers(receipt, holder, ask)
            checked.append(ask.holdings.add(receipt, certificate))
        except (RemoteProtocolError, IntegrityError) as exc:
            return Answer(Said.FAILED, problem=f"sent a bad receipt: {exc}")
    return Answer(Said.STATED, checked)


async def _call(
    dht: Dht, holder: Candidate, queries: tuple[PositionQuery, ...], timeout: float
) -> StateFragmentsReply | Answer:
    """The holder's reply, or the :class:`Answer` its failure amounts to."""
    try:
        reply = await dht.node.call(
            holder.node_id, holder.address, StateFragments(queries=queries), timeout=timeout
        )
    except RemoteError as refused:
        if refused.means(NodeLeaving):
            return Answer(Said.LEAVING)
        return Answer(Said.FAILED, problem=f"refused to sign: {refused}")
    except (PeerUnreachable, PeerRefused, StoreError) as exc:
        return Answer(Said.SILENT, problem=str(exc))
    except RemoteProtocolError as exc:
        return Answer(Said.FAILED, problem=str(exc))
    if not isinstance(reply, StateFragmentsReply) or len(reply.receipts) != len(queries):
        return Answer(Said.FAILED, problem="answered with something else than receipts")
    return reply


def _fragment_id(holdings: Holdings, position: int) -> bytes:
    fragment_id = holdings.fragment_id(position)
    assert fragment_id is not None, "asking about a position beyond the object"
    return fragment_id


def _check_answers(receipt: Receipt, holder: Candidate, ask: Ask) -> None:
    """The receipt is the asked holder's, about exactly the positions asked."""
    if receipt.holder != holder.node_id:
        raise RemoteProtocolError(f"answered with node {short_id(receipt.holder)}'s receipt")
    held, missing = receipt.positions()
    if sorted((*held, *missing)) != sorted(ask.positions):
        raise RemoteProtocolError("the receipt does not state exactly the positions asked")


async def read_holdings(
    dht: Dht, holdings: Holdings, records: Sequence[SignedRecord] | None = None
) -> int:
    """Merge every placement record found under the object's key (``records``, or a DHT
    lookup) into ``holdings``; returns how many records were read.  Problems are logged."""
    if records is None:
        records = await dht.find_records(RecordKind.PLACEMENT, manifest_key(holdings.object_id))
    for record in records:
        for problem in holdings.add_container(record.value):
            log.warning(
                "object %s: %s (publisher key %s)",
                holdings.object_id.hex()[:16],
                problem,
                short_id(record.publisher_key),
                extra={"event": "placement_ignored", "object": holdings.object_id.hex()},
            )
    return len(records)


async def publish_holdings(
    dht: Dht, holdings: Holdings, *, exclude: Exclusion | None = None
) -> int:
    """Publish this node's placement record for the object: a container of the receipts it
    verified that count now (minus ``exclude``), signed as a new version of its own record.
    Returns how many peers stored it.  Raises :class:`LocalProtocolError` if it is too large."""
    now = dht.wall_clock()
    value = holdings.encode(now, dht.trust(), exclude=exclude)
    key = manifest_key(holdings.object_id)
    return await dht.publish_value(RecordKind.PLACEMENT, key, value)
