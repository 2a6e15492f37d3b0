"""Rolling upgrades: nodes of this release and of the previous one (a node offering only
version 2) in one mesh, in memory and on TLS.  Objects go in and come out across both; nothing
of version 3 is ever sent to the older node; a mesh policy that no longer allows version 2
closes its sessions, saying why."""

from __future__ import annotations

import logging
import random

import pytest
import trio
from test_net_client import get_bytes, put_bytes

from p2pstore.core.ca_records import policy_record, revocation_record
from p2pstore.core.contact import Contact
from p2pstore.core.mesh_policy import MeshPolicy
from p2pstore.core.records import RecordKind, ca_record_key
from p2pstore.core.rules import SHIPPED_RULES
from p2pstore.errors import PeerTooOld, PeerUnreachable
from p2pstore.net.mesh_trust import publish_ca_record
from p2pstore.testing.storage_mesh import StorageMesh
from p2pstore.wire import PREVIOUS_VERSION as OLD_VERSION
from p2pstore.wire import PROTOCOL_VERSION, FindNodeReply, FindValue, Store

OLD = 2
"""The index of the node of the previous release in each mesh below."""


def versions_seen(mesh: StorageMesh) -> dict[tuple[int, int], int]:
    """(node index, peer index) -> the settled version, for every session between nodes."""
    index = {m.node_id: m.index for m in mesh.nodes}
    return {
        (m.index, index[view.identity.node_id]): view.version
        for m in mesh.nodes
        for view in m.node.peers()
        if view.identity.node_id in index
    }


async def test_a_mixed_mesh_stores_and_reads_across_versions(net, clock, caplog):
    """Six nodes, one of the previous release: a put by a new client places a fragment on it
    (one per datacenter), an old client reads the object back, new nodes settle on version 3
    among themselves and 2 with it, and a CA record (a kind version 2 does not know) reaches
    every new node but is never sent to the old one."""
    caplog.set_level(logging.INFO, logger="p2pstore")
    mesh = StorageMesh(net, 6, versions={OLD: (OLD_VERSION,)})
    data = random.Random(3).randbytes(150_000)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        seen = versions_seen(mesh)
        assert seen, "the nodes are in session"
        for (a, b), version in seen.items():
            assert version == (OLD_VERSION if OLD in (a, b) else PROTOCOL_VERSION), (a, b)
        writer = await mesh.client(nursery)
        result = await put_bytes(writer, data)
        holders = {h.node_id for row in result.placement.chunks for h in row if h is not None}
        assert mesh.nodes[OLD].node_id in holders
        reader = await mesh.client(nursery, versions=(OLD_VERSION,))
        assert await get_bytes(reader, result.read_cap) == data

        # A v3-only record kind: the new nodes take it, the old node is never sent it.
        old_id = mesh.nodes[OLD].node_id
        record = revocation_record(net.ca, mesh.wall_clock())
        new = mesh.nodes[0]
        said = []
        for _ in range(2):
            with pytest.raises(PeerTooOld) as refused:
                await new.node.request(old_id, Store(record=record))
            assert (refused.value.needed, refused.value.settled) == (PROTOCOL_VERSION, OLD_VERSION)
            said.append(len(skipped(caplog)))
        assert said[0] == 1 and said[1] == 1  # said once per session and message type
        assert await publish_ca_record(writer.dht, record) >= 1
        key = ca_record_key(RecordKind.REVOCATION, net.ca.certificate)
        held = [bool(m.dht.holder.local_records(RecordKind.REVOCATION, key)) for m in mesh.nodes]
        assert not held[OLD]
        assert any(held)
        # Lookups for it ask the old node for closer nodes instead, and do not count it failed.
        for member in mesh.nodes:
            if member.index != OLD:
                found = await member.dht.find_records(RecordKind.REVOCATION, key)
                assert [r.sequence for r in found] == [record.sequence]
                assert old_id in {c.id for c in member.dht.table.contacts()}
        # Asked for it, the old node is asked for closer nodes instead, and not counted failed.
        old = mesh.nodes[OLD]
        contact = Contact(old_id, old.node.address, old.datacenter, "FR-IDF")
        send, receive = trio.open_memory_channel[tuple](1)
        await new.dht._query(contact, FindValue(kind=int(RecordKind.REVOCATION), key=key), send)
        (asked, outcome) = await receive.receive()
        assert asked == contact and isinstance(outcome, FindNodeReply)
        assert "FindValue" in {r.kind for r in skipped(caplog)}  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()
    assert all(r.peer == old_id.hex() for r in skipped(caplog))  # type: ignore[attr-defined]


def skipped(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "older_peer_skipped"]


async def test_a_policy_without_the_old_version_closes_its_sessions(net, clock, caplog):
    """The CA's policy allows only version 3: every new node closes its session with the old
    one, naming the reason; the old node cannot come back (the new ones offer only 3)."""
    caplog.set_level(logging.INFO, logger="p2pstore")
    interval = 300.0 if net.kind == "memory" else 5.0
    mesh = StorageMesh(net, 4, versions={OLD: (OLD_VERSION,)}, trust_refresh=interval)
    old_id = mesh.nodes[OLD].node_id
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        assert any(p.identity.node_id == old_id for p in mesh.nodes[0].node.peers())
        client = await mesh.client(nursery)
        policy = MeshPolicy(20, dict(SHIPPED_RULES), protocol_versions=(PROTOCOL_VERSION,))
        assert await publish_ca_record(client.dht, policy_record(net.ca, policy, mesh.wall_clock()))
        new = [m for m in mesh.nodes if m.index != OLD]
        with trio.fail_after(interval):
            for member in new:
                assert member.mesh_trust is not None
                while member.mesh_trust.policy != policy:
                    await member.mesh_trust.wait_adopted()
            for member in new:
                while any(p.identity.node_id == old_id for p in member.node.peers()):
                    await member.node.wait_peers_changed()
        assert all(p.version == PROTOCOL_VERSION for m in new for p in m.node.peers())
        # A redial by the old node is refused at the Hello: nothing both speak any more.
        with pytest.raises(PeerUnreachable, match="during its greeting"):
            await mesh.nodes[OLD].node.connect(mesh.nodes[0].node.address)
        errors = [r for r in caplog.records if getattr(r, "event", "") == "session_error"]
        assert any("this node speaks version 2" in r.getMessage() for r in errors)
        assert not any(p.identity.node_id == old_id for p in mesh.nodes[0].node.peers())
        nursery.cancel_scope.cancel()
    refused_events = [
        r for r in caplog.records if getattr(r, "event", "") == "peer_version_refused"
    ]
    assert refused_events
    assert all("allows wire protocol versions 3" in r.getMessage() for r in refused_events)
