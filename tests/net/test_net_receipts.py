"""The issue's attacks on placement, replayed on the in-memory network and on TLS: forged
placement records (any signer, any sequence, pointing anywhere), a restarted steward, a holder
that will not sign, a revoked holder.  Placements are unions of holder-signed receipts, so none
of them takes an honest holder away from any reader or steward."""

from __future__ import annotations

import random

import msgpack
import trio
from hostile import (
    forge_placement_claiming,
    forge_placement_disowning,
    forge_placement_table,
    signed_placement_record,
    store_placement_everywhere,
    throwaway_key,
)
from storage_mesh import StorageMesh
from test_net_client import get_bytes, put_bytes
from test_net_steward import (
    assert_within,
    patience,
    repairs_started,
    rule_of,
    steward_settings,
    timings,
    until_whole,
)

from p2pstore.core.placement import Candidate
from p2pstore.core.receipts import decode_receipt
from p2pstore.core.records import RecordKind, manifest_key
from p2pstore.net.node import Node
from p2pstore.net.repairer import Known
from p2pstore.net.steward import Steward
from p2pstore.wire import ErrorReply, Message, StateFragments

SECRET = b"s" * 32


def holder_sets(placement, chunks: int, n: int) -> list[set[bytes]]:
    return [
        {h.node_id for h in placement.holders_of(c, s)} for c in range(chunks) for s in range(n)
    ]


def relayed_holders(record) -> set[bytes]:
    """The holders whose receipts a placement record relays."""
    items = msgpack.unpackb(record.value)
    return {decode_receipt(raw).holder for raw in items[4]}


def steward_of(mesh: StorageMesh, object_id: bytes):
    key = int.from_bytes(manifest_key(object_id), "big")
    live = [m for m in mesh.nodes if m.node_id not in mesh.dead]
    return min(live, key=lambda m: int.from_bytes(m.node_id, "big") ^ key)


async def rounds(member, count: int, net) -> None:
    _, interval = timings(net)
    with trio.fail_after(count * (interval + 60)):
        for _ in range(count):
            await member.steward.wait_round()


async def test_forged_placements_change_no_view_and_the_object_stays_readable(net, clock):
    """Three forgeries stored on every node at sequence 2^62: the issue's format-1 table
    pointing every share elsewhere, receipts disowning every share forged in the holders'
    names, and a certified member's genuine claim that it holds everything.  Readers and
    stewards keep every honest holder; get is byte-identical; stat is healthy; nothing is
    repaired; no steward relays a forged receipt, even after a restart; re-putting works."""
    rule = rule_of(net, threshold=6)  # eager: had any steward lost a holder, it would repair
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=(rule,))
    data = random.Random(5).randbytes(100_000)
    attacker_credentials = net.credentials(datacenter="dc-evil", region="FR-GES")
    attacker = Node(
        attacker_credentials,
        net.transport(attacker_credentials),
        settings=mesh._node_settings(),
    )
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        await nursery.start(attacker.run)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule, convergence_secret=SECRET)
        manifest, object_id = result.manifest, result.read_cap.object_id
        chunks, n = manifest.chunk_count, manifest.n
        honest = holder_sets(result.placement, chunks, n)
        assert all(len(holders) == 1 for holders in honest)
        holders = set().union(*honest)
        elsewhere = [
            Candidate(m.node_id, m.node.address, m.datacenter, "FR-GES")
            for m in mesh.nodes
            if m.node_id not in holders
        ] or [Candidate(attacker.identity.node_id, attacker.address, "dc-evil", "FR-GES")]
        now = mesh.wall_clock()
        forger = throwaway_key()
        forgeries = [
            signed_placement_record(
                forger, object_id, forge_placement_table(object_id, manifest, elsewhere), now=now
            ),
            signed_placement_record(
                forger,
                object_id,
                forge_placement_disowning(
                    object_id, manifest, [m.credentials for m in mesh.nodes], key=forger, now=now
                ),
                now=now,
                sequence=2**62 + 1,
            ),
            signed_placement_record(
                attacker_credentials,
                object_id,
                forge_placement_claiming(object_id, manifest, attacker_credentials, now=now),
                now=now,
            ),
        ]
        targets = [(m.node_id, m.node.address) for m in mesh.nodes]
        taken = [await store_placement_everywhere(attacker, targets, r) for r in forgeries]
        assert taken[-1] > 0  # a certified member's record is held (the others may be refused)

        reader = await mesh.client(nursery)
        seen = holder_sets(await reader.fetch_placement(object_id, manifest), chunks, n)
        for was, now_seen in zip(honest, seen, strict=True):
            assert was <= now_seen
            assert now_seen - was <= {attacker.identity.node_id}
        assert any(attacker.identity.node_id in s for s in seen)  # the forgeries were read
        assert await get_bytes(reader, result.read_cap) == data
        status = await reader.stat(result.verify_cap)
        assert [status.live(i) for i in range(chunks)] == [n] * chunks

        steward = steward_of(mesh, object_id)
        await rounds(steward, 2, net)
        assert repairs_started(mesh) == 0
        key = (int(RecordKind.PLACEMENT), manifest_key(object_id))
        own = steward.dht.published.get(*key)
        assert own is not None and relayed_holders(own) <= holders
        assert own.sequence < 2**62  # its own version, not the forger's

        # A restarted steward: no memory, the same held records (forgeries included).
        restarted = Steward(
            steward.dht,
            steward.steward.rules,
            store=steward.service.store,
            settings=steward.steward.settings,
            client_settings=steward.steward.client.settings,
        )
        steward.dht.published.remove(*key)
        report = await restarted.check_objects([Known.of(manifest)], renew_records=True)
        assert not report.repairs
        assert relayed_holders(steward.dht.published.get(*key)) <= holders

        again = await put_bytes(client, data, rule, convergence_secret=SECRET)
        assert again.read_cap == result.read_cap
        assert await get_bytes(await mesh.client(nursery), again.read_cap) == data
        nursery.cancel_scope.cancel()


async def test_a_holder_that_will_not_sign_is_repaired_at_once(net, clock):
    """A holder keeps its fragments but answers checks with an error or someone else's
    receipt: its shares count missing at the steward's next round, no grace, and are rebuilt
    elsewhere; stat shows them unconfirmed meanwhile."""
    grace, _ = timings(net)
    rule = rule_of(net, threshold=6)
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=(rule,))
    data = random.Random(6).randbytes(60_000)  # one chunk
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        object_id = result.read_cap.object_id
        steward = steward_of(mesh, object_id)
        refusers = [
            mesh.by_id(h.node_id)
            for h in result.placement.chunks[0]
            if h is not None and h.node_id != steward.node_id
        ][:2]
        other = next(m.node for m in mesh.nodes if m not in refusers)

        async def refuse(peer, message: Message) -> Message:
            return ErrorReply(code="busy", message="not signing today")

        async def sign_as_another(peer, message: Message) -> Message:
            assert isinstance(message, StateFragments)
            return await other._handlers[StateFragments](peer, message)

        refusers[0].node._handlers[StateFragments] = refuse
        refusers[1].node._handlers[StateFragments] = sign_as_another
        started = trio.current_time()
        status = await until_whole(mesh, client, result.verify_cap, 1, rule.n, patience(net, 4))
        if net.kind == "memory":
            assert trio.current_time() - started < grace
        kept = {h.node_id for h in status.placement.chunks[0] if h is not None}
        assert not kept & {m.node_id for m in refusers}
        assert_within(status, rule, {m.node_id for m in refusers})
        assert await get_bytes(client, result.read_cap) == data
        nursery.cancel_scope.cancel()


async def test_revoking_a_holder_gets_its_shares_repaired_elsewhere(net, clock):
    """Revoking a holder's certificate removes its receipts from every view at once: its
    shares are rebuilt on other nodes without waiting for a grace period, and readers never
    count it again."""
    grace, _ = timings(net)
    rule = rule_of(net, threshold=6)
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=(rule,))
    data = random.Random(7).randbytes(100_000)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        object_id = result.read_cap.object_id
        steward = steward_of(mesh, object_id)
        revoked = next(
            mesh.by_id(h.node_id)
            for h in result.placement.chunks[0]
            if h is not None and h.node_id != steward.node_id
        )
        mesh.revoke(revoked)
        placement = await client.fetch_placement(object_id, result.manifest)
        assert revoked.node_id not in {h.node_id for h in placement.holders()}
        started = trio.current_time()
        status = await until_whole(mesh, client, result.verify_cap, 2, rule.n, patience(net, 4))
        if net.kind == "memory":
            assert trio.current_time() - started < grace
        assert_within(status, rule, {revoked.node_id})
        assert revoked.node_id not in {h.node_id for h in status.placement.holders()}
        reader = await mesh.client(nursery)
        assert await get_bytes(reader, result.read_cap) == data
        nursery.cancel_scope.cancel()
