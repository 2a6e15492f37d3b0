"""Revocation and policy that spread: a node keeps its trust anchor at the newest revocation
list the mesh CA published, and its coding rules at the newest mesh policy, without anyone
copying files.

Strategy: the CA publishes its CRL as a DHT record it signs itself
(:mod:`p2pstore.core.ca_records`).  A node asks the DHT for it when it joins and every
``interval``, takes it from any peer that stores a newer one here, and passes each list it
adopts on to its peers once, so a revocation reaches the whole mesh in a few hops instead of a
refresh interval.  Adopting is :meth:`Node.apply_trust`: sessions of revoked identities close,
the DHT drops the records they signed, and placements, checked against the trust anchor at
every use, stop counting their receipts, so stewards repair their fragments elsewhere.  Only a
list with a higher CRL number than the one in force is taken: replaying an old one, even one
the CA signed, changes nothing, and costs the sender a comparison of two integers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import trio

from p2pstore.core.ca_records import newest
from p2pstore.core.contact import Contact
from p2pstore.core.mesh_policy import MeshPolicy, decode_policy
from p2pstore.core.records import RecordKind, ca_record_key, verify_record
from p2pstore.errors import IdentityError, RecordRejected, RemoteProtocolError
from p2pstore.identity.revocation import RevocationList, newer_trust, parse_revocation_list
from p2pstore.net.dht import Dht
from p2pstore.wire import SignedRecord

log = logging.getLogger("p2pstore.trust")

DEFAULT_REFRESH = 300.0
"""Seconds between two fetches of the CA's records from the DHT (``[identity] trust_refresh``)."""

KINDS = (RecordKind.REVOCATION, RecordKind.POLICY)
_EVENT: dict[int, str] = {
    RecordKind.REVOCATION: "revocation_list",
    RecordKind.POLICY: "mesh_policy",
}

SPREAD_CONCURRENCY = 8
"""Peers a node sends a newly adopted record to at once."""


class MeshTrust:
    """Keeps ``dht``'s node at the newest revocation list and policy published in the mesh.
    Start with ``await nursery.start(mesh_trust.run)``; :meth:`refresh` right after joining."""

    def __init__(
        self,
        dht: Dht,
        *,
        interval: float = DEFAULT_REFRESH,
        on_policy: Callable[[MeshPolicy], None] | None = None,
    ) -> None:
        """``on_policy`` is called with each newer mesh policy adopted."""
        if not interval > 0:
            raise ValueError(f"the trust refresh interval must be positive, got {interval}")
        self.dht = dht
        self.interval = interval
        self.policy: MeshPolicy | None = None
        """The newest mesh policy adopted, if the CA published one."""
        self._on_policy = on_policy
        self._nursery: trio.Nursery | None = None
        self._adopted = trio.Event()
        dht.holder.ca_listeners.append(self.offer)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Adopt what the node already holds (records saved by its last run), then fetch from
        the DHT every ``interval`` until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            ca = self.dht.trust().ca_certificate
            for kind in KINDS:
                held = self.dht.holder.local_records(int(kind), ca_record_key(kind, ca))
                best = newest(held, kind)
                if best is not None:
                    self.offer(best)
            task_status.started()
            while True:
                await trio.sleep(self.interval)
                await self.refresh()

    async def wait_adopted(self) -> None:
        """Return once this node adopts a newer revocation list or policy than when called."""
        await self._adopted.wait()

    async def refresh(self) -> bool:
        """Ask the DHT for the CA's revocation list and policy; adopt what is newer.  True if
        anything was."""
        ca = self.dht.trust().ca_certificate
        adopted = False
        for kind in KINDS:
            records = await self.dht.find_records(kind, ca_record_key(kind, ca))
            best = newest(records, kind)
            adopted = (best is not None and self.offer(best)) or adopted
        return adopted

    def offer(self, record: SignedRecord) -> bool:
        """Adopt ``record`` (a revocation list or policy) if it is valid and newer than the one
        in force, keep it to serve it, and pass it on to every peer; True if adopted."""
        trust = self.dht.trust()
        current = trust.crl_number if record.kind == RecordKind.REVOCATION else self._policy_number
        if record.kind not in KINDS or record.sequence <= current:
            return False
        now = self.dht.wall_clock()
        what = "revocation list" if record.kind == RecordKind.REVOCATION else "mesh policy"
        try:
            verify_record(record, now, trust=trust)
            if record.kind == RecordKind.POLICY:
                self._adopt_policy(decode_policy(record.value))
            elif not self._adopt_revocations(
                parse_revocation_list(record.value, trust.ca_certificate)
            ):
                return False
        except (RecordRejected, IdentityError, RemoteProtocolError) as error:
            log.warning(
                "refused a %s: %s",
                what,
                error,
                extra={"event": f"{_EVENT[record.kind]}_refused", "number": record.sequence},
            )
            return False
        try:
            self.dht.holder.store.put(record, now, trust=self.dht.trust())
        except RecordRejected as error:  # a full store: we still pass it on
            log.debug("not holding the %s: %s", what, error)
        self._adopted.set()
        self._adopted = trio.Event()
        if self._nursery is not None:
            self._nursery.start_soon(self._spread, record)
        return True

    @property
    def _policy_number(self) -> int:
        return 0 if self.policy is None else self.policy.sequence

    def _adopt_revocations(self, crl: RevocationList) -> bool:
        trust = self.dht.trust()
        adopted = newer_trust(trust, crl)
        if adopted is None:
            return False
        self.dht.node.transport.reload_trust(adopted)
        self.dht.node.apply_trust(adopted)
        log.warning(
            "adopted revocation list %d from the mesh CA: %d certificates revoked (was %d)",
            crl.number,
            len(crl.revoked_serials),
            trust.crl_number,
            extra={
                "event": "revocation_list_adopted",
                "number": crl.number,
                "revoked": len(crl.revoked_serials),
                "next_update": _iso(crl.next_update),
            },
        )
        return True

    def _adopt_policy(self, policy: MeshPolicy) -> None:
        self.policy = policy
        self.dht.node.allow_versions(policy.protocol_versions)
        if self._on_policy is not None:
            self._on_policy(policy)
        log.warning(
            "adopted mesh policy %d from the mesh CA: rules %s, protocol versions %s",
            policy.sequence,
            ", ".join(sorted(policy.rules)),
            ", ".join(map(str, policy.protocol_versions)) or "any",
            extra={"event": "mesh_policy_adopted", "number": policy.sequence},
        )

    async def _spread(self, record: SignedRecord) -> None:
        """Store ``record`` on every peer in session and on the closest nodes to its key."""
        limiter = trio.CapacityLimiter(SPREAD_CONCURRENCY)
        publisher = self.dht.publisher

        async def store_on(contact: Contact) -> None:
            async with limiter:
                await publisher.store_on(contact, record)

        async with trio.open_nursery() as nursery:
            for contact in _session_contacts(self.dht):
                nursery.start_soon(store_on, contact)
            nursery.start_soon(publisher.store_on_closest, record)


async def publish_ca_record(dht: Dht, record: SignedRecord) -> int:
    """Store a record the CA signed on the nodes closest to its key and on every node ``dht``'s
    node is in session with (what ``p2pstore ca publish`` does through a client); returns how
    many stored it as new.  Each node that adopts it passes it on."""
    accepted = 0
    publisher = dht.publisher

    async def store_on(contact: Contact) -> None:
        nonlocal accepted
        accepted += await publisher.store_on(contact, record)

    async with trio.open_nursery() as nursery:
        for contact in _session_contacts(dht):
            nursery.start_soon(store_on, contact)
    return accepted + await publisher.store_on_closest(record)


def _session_contacts(dht: Dht) -> list[Contact]:
    return [
        Contact(view.identity.node_id, view.address, view.identity.datacenter, view.identity.region)
        for view in dht.node.peers()
    ]


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat()
