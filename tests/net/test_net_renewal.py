"""A renewed certificate (same key) taken by a running node: new sessions see it, sessions
already up keep going, and a certificate of another node is refused.  In memory and on TLS."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio
from cryptography.hazmat.primitives import serialization

from p2pstore.core.announcements import Announcement, decode_announcement
from p2pstore.core.published import PublishedRecords
from p2pstore.core.records import RecordKind
from p2pstore.errors import IdentityError, LocalProtocolError
from p2pstore.identity import NodeCredentials
from p2pstore.identity.signing_request import renew_certificate
from p2pstore.net.node import Node
from p2pstore.testing.storage_mesh import StorageMesh


def renewed(net, credentials: NodeCredentials, days: int = 365) -> NodeCredentials:
    """``ca renew``, installed in place of the old certificate (as an operator does)."""
    certificate = renew_certificate(
        net.ca, credentials.certificate, now=net.now, valid_days=days
    )
    assert credentials.certificate_path is not None and credentials.key_path is not None
    credentials.certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return NodeCredentials.load(credentials.key_path, credentials.certificate_path)


async def test_new_sessions_see_the_renewed_certificate(net, clock) -> None:
    old = net.credentials(valid_days=10)
    node = Node(old, net.transport(old))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        before = await net.transport().connect(node.address)
        assert before.peer.serial == old.identity.serial
        first = Node(net.credentials(), net.transport())
        await nursery.start(first.run)
        await first.connect(node.address)

        new = renewed(net, old)
        told: list[NodeCredentials] = []
        node.on_renewal(told.append)
        node.renew_credentials(new)
        assert told == [new] and node.identity == new.identity
        assert new.identity.serial != old.identity.serial
        assert new.identity.node_id == old.identity.node_id

        after = await net.transport().connect(node.address)
        assert after.peer.serial == new.identity.serial
        assert after.peer.not_after > old.identity.not_after + timedelta(days=300)
        # The session made before goes on, with the certificate it was made with.
        (view,) = first.peers()
        assert view.identity.serial == old.identity.serial
        await first.ping(node.identity.node_id)
        await before.aclose()
        await after.aclose()
        nursery.cancel_scope.cancel()


async def test_a_certificate_of_another_node_is_refused(net, clock) -> None:
    mine = net.credentials(datacenter="dc-1")
    node = Node(mine, net.transport(mine))
    other_key = net.credentials(datacenter="dc-1")
    elsewhere = renew_certificate(net.ca, mine.certificate, now=net.now)
    assert elsewhere  # a genuine renewal exists; the refusals below are not about the CA
    with pytest.raises(IdentityError, match="makes a new node"):
        node.renew_credentials(other_key)
    moved = net.credentials(datacenter="dc-2")
    with pytest.raises(IdentityError, match="makes a new node"):
        node.renew_credentials(moved)
    assert node.identity == mine.identity and node.transport.credentials == mine


def test_published_records_are_signed_with_the_renewed_certificate(net) -> None:
    old = net.credentials(valid_days=10)
    records = PublishedRecords(old)
    key = old.identity.node_id  # a node announces itself under its own id
    identity = old.identity

    def announcement(credentials: NodeCredentials) -> bytes:
        der = credentials.certificate_der()
        return Announcement("a:1", identity.datacenter, identity.region, 0, der).encode()

    slot = (int(RecordKind.ANNOUNCEMENT), key)
    first = records.publish(RecordKind.ANNOUNCEMENT, key, announcement(old), net.now.timestamp())
    assert first.certificate == old.certificate_der()
    new = renewed(net, old)
    records.use(new)
    later = net.now.timestamp() + 10 * 86400  # its republish, with the value as it is now
    (second,) = records.due(later, values={slot: announcement(new)})
    assert second.certificate == new.certificate_der()
    assert second.sequence > first.sequence
    with pytest.raises(LocalProtocolError, match="same key"):
        records.use(net.credentials())


async def test_the_announcement_carries_the_renewed_certificate_at_once(net, clock) -> None:
    """The node's announcement (which placement reads) holds its certificate in its value: on
    renewal it is signed again and sent at once, not when its period comes round."""
    mesh = StorageMesh(net, 3)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        member = mesh.nodes[1]
        await member.dht.announce(10**12)
        sent = trio.Event()
        publisher = member.dht.publisher
        store_on_closest = publisher.store_on_closest

        async def watching(record):
            stored = await store_on_closest(record)
            if record.kind == RecordKind.ANNOUNCEMENT:
                sent.set()
            return stored

        publisher.store_on_closest = watching  # type: ignore[method-assign]
        new = renewed(net, member.credentials)
        member.node.renew_credentials(new)
        with trio.fail_after(10):
            await sent.wait()
        found = await mesh.nodes[0].dht.find_records(RecordKind.ANNOUNCEMENT, member.node_id)
        assert found and all(r.certificate == new.certificate_der() for r in found)
        assert decode_announcement(found[0].value).certificate_der == new.certificate_der()
        assert decode_announcement(found[0].value).free_bytes == 10**12
        nursery.cancel_scope.cancel()
