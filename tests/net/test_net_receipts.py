"""The issue's attacks on placement, replayed on the in-memory network and on TLS: forged
placement records (any signer, any sequence, pointing anywhere), a restarted steward, a holder
that will not sign, a revoked holder.  Placements are unions of holder-signed receipts, so none
of them takes an honest holder away from any reader or steward."""

from __future__ import annotations

import random
from types import SimpleNamespace

import msgpack
import pytest
import trio
from hostile import (
    LyingHolder,
    forge_placement_claiming,
    forge_placement_disowning,
    forge_placement_pointing,
    forge_placement_table,
    signed_placement_record,
    store_placement_everywhere,
    throwaway_key,
)
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
from p2pstore.errors import NotEnoughFragments
from p2pstore.net.node import Node
from p2pstore.net.repairer import Known
from p2pstore.net.steward import Steward
from p2pstore.testing.storage_mesh import StorageMesh
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
            return await other.dispatcher.handlers[StateFragments](peer, message)

        refusers[0].node.dispatcher.handlers[StateFragments] = refuse
        refusers[1].node.dispatcher.handlers[StateFragments] = sign_as_another
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


def stored_truth(mesh: StorageMesh, manifest) -> list[set[bytes]]:
    """Per position, the mesh nodes whose stores really hold the fragment."""
    return [
        {m.node_id for m in mesh.nodes if m.service.store.has(chunk.fragment_ids[share])}
        for chunk in manifest.chunks
        for share in range(manifest.n)
    ]


def assert_truthful(status, truth: list[set[bytes]], liar: bytes) -> None:
    """``stat`` counts a share live exactly when some node stores it, every honest answer is
    what the node's store says, and the liar, which signed for fragments it does not have,
    failed the audit ``stat`` made and counts for none of them."""
    n = status.manifest.n
    for chunk in range(len(status.present)):
        held = [bool(truth[chunk * n + share]) for share in range(n)]
        assert [bool(state) for state in status.present[chunk]] == held
    for (holder, position), said in status.answers.items():
        if holder != liar:
            assert said == (holder in truth[position]), (holder.hex()[:8], position)
        else:
            assert said is False
    assert [e.challenge.holder for e in status.audit_failures()] == [liar]


async def test_re_putting_after_forged_placements_brings_a_lost_object_back(net, clock):
    """The issue's re-put.  The object's fragments are gone from every holder, and forged
    placements sit on every node at sequence 2^62: a throw-away key's (format 1, and today's
    format pointing every share at nodes that do not hold it), members' (the same, and one
    disowning the holders) and the attacker's own claim that its node, which says yes to
    everything, holds it all.  stat tells the truth (unreadable, the attacker failed its
    audit) and get fails; an honest put of the same file (same object id, a sequence far
    below 2^62) from another client makes it readable byte-identical, and stat counts exactly
    the fragments the nodes' stores hold."""
    mesh = StorageMesh(net, 8)  # no stewards: only the re-put can bring the object back
    data = random.Random(8).randbytes(150_000)  # three chunks
    liar_credentials = net.credentials(datacenter="dc-evil", region="FR-GES")
    liar_node = Node(
        liar_credentials, net.transport(liar_credentials), settings=mesh._node_settings()
    )
    liar = LyingHolder(liar_node, wall_clock=mesh.wall_clock)
    members = [net.credentials(datacenter=f"dc-bad-{i}", region="FR-IDF") for i in range(3)]
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        await nursery.start(liar_node.run)
        client = await mesh.client(nursery)
        first = await put_bytes(client, data, convergence_secret=SECRET)
        manifest, object_id = first.manifest, first.read_cap.object_id
        positions = manifest.chunk_count * manifest.n
        truth = stored_truth(mesh, manifest)
        assert all(len(holders) == 1 for holders in truth)

        # Every share pointed at a mesh node that does not hold it.
        order = [m.node_id for m in mesh.nodes]

        def away(position: int) -> int:
            (holder,) = truth[position]
            return (order.index(holder) + 1) % len(order)

        table = forge_placement_table(
            object_id,
            manifest,
            [Candidate(m.node_id, m.node.address, m.datacenter, "FR-GES") for m in mesh.nodes],
            away,
        )
        now = mesh.wall_clock()

        def pointing(key) -> bytes:
            pointed = [
                (m.credentials, [p for p in range(positions) if away(p) == i])
                for i, m in enumerate(mesh.nodes)
            ]
            return forge_placement_pointing(object_id, manifest, pointed, key=key, now=now)

        honest = [m.credentials for m in mesh.nodes]
        signers_and_values = [
            (throwaway_key(b"one"), table),
            (throwaway_key(b"two"), pointing(throwaway_key(b"two"))),
            (members[0], table),
            (members[1], pointing(members[1].private_key)),
            (
                members[2],
                forge_placement_disowning(
                    object_id, manifest, honest, key=members[2].private_key, now=now
                ),
            ),
            (
                liar_credentials,
                forge_placement_claiming(
                    object_id, manifest, liar_credentials, now=now, address=liar_node.address
                ),
            ),
        ]
        targets = [(m.node_id, m.node.address) for m in mesh.nodes]
        for signer, value in signers_and_values:
            record = signed_placement_record(signer, object_id, value, now=now)
            await store_placement_everywhere(liar_node, targets, record)

        for m in mesh.nodes:  # the object is lost from its holders
            for chunk in manifest.chunks:
                for fragment in chunk.fragment_ids:
                    m.service.store.delete(fragment)
        reader = await mesh.client(nursery)
        with pytest.raises(NotEnoughFragments):
            await get_bytes(reader, first.read_cap)
        lost = await reader.stat(first.verify_cap)
        assert not lost.readable
        assert_truthful(lost, stored_truth(mesh, manifest), liar.node_id)
        assert liar.node_id in {h.node_id for h in lost.placement.holders()}  # it was read

        again = await put_bytes(await mesh.client(nursery), data, convergence_secret=SECRET)
        assert again.read_cap == first.read_cap
        before, truth = truth, stored_truth(mesh, manifest)
        assert all(len(holders) == 1 for holders in truth)
        reader = await mesh.client(nursery)
        assert await get_bytes(reader, again.read_cap) == data
        status = await reader.stat(again.verify_cap)
        assert status.readable
        assert [status.live(i) for i in range(manifest.chunk_count)] == [manifest.n] * 3
        assert_truthful(status, truth, liar.node_id)
        for position, holders in enumerate(truth):  # no share points away from its holder
            chunk, share = divmod(position, manifest.n)
            listed = {h.node_id for h in status.placement.holders_of(chunk, share)}
            assert holders <= listed <= holders | before[position] | {liar.node_id}

        # "Revoking the attacker's certificate and reloading every node changed nothing": now
        # its record is dropped everywhere and its receipts count nowhere.
        def liar_records() -> int:
            key, now = manifest_key(object_id), mesh.wall_clock()
            public = liar_credentials.private_key.public_key().public_bytes_raw()
            return sum(
                r.publisher_key == public
                for m in mesh.nodes
                for r in m.dht.store.get(int(RecordKind.PLACEMENT), key, now)
            )

        assert liar_records() > 0
        mesh.revoke(SimpleNamespace(credentials=liar_credentials))
        assert liar_records() == 0
        status = await reader.stat(again.verify_cap)
        assert liar.node_id not in {h.node_id for h in status.placement.holders()}
        assert status.readable and not status.audit_failures()
        nursery.cancel_scope.cancel()


async def test_revoking_a_holder_drops_its_receipts_from_every_object_it_held(net, clock):
    """Five objects (one to three chunks) share a holder; the CA revokes it and every node
    reloads its CRL.  The records relaying its receipts are still found, but in every object's
    placement, for a fresh reader, its receipts count for nothing: stat neither lists nor asks
    it, and counts none of its shares until another holder has them.  The stewards rebuild
    every fragment it held, inside the rule, without waiting for a grace period; their own
    records relay none of its receipts; every object reads back byte-identical."""
    grace, _ = timings(net)
    rule = rule_of(net, threshold=6)
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=(rule,))
    sizes = (60_000, 150_000, 190_000, 100_000, 130_000)
    blobs = [random.Random(30 + i).randbytes(size) for i, size in enumerate(sizes)]
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        results = [await put_bytes(client, blob, rule) for blob in blobs]
        stewards = {steward_of(mesh, r.read_cap.object_id).node_id for r in results}

        def held_by(member) -> list[int]:
            return [
                i
                for i, r in enumerate(results)
                if member.node_id in {h.node_id for h in r.placement.holders()}
            ]

        revoked = max(
            (m for m in mesh.nodes if m.node_id not in stewards), key=lambda m: len(held_by(m))
        )
        objects = held_by(revoked)
        assert len(objects) >= 3
        shares = {
            i: {
                (c, s)
                for c, row in enumerate(results[i].placement.chunks)
                for s, h in enumerate(row)
                if h is not None and h.node_id == revoked.node_id
            }
            for i in objects
        }
        mesh.revoke(revoked)
        started = trio.current_time()

        reader = await mesh.client(nursery)
        for i in objects:
            result = results[i]
            object_id, manifest = result.read_cap.object_id, result.manifest
            key = manifest_key(object_id)
            records = await reader.dht.find_records(RecordKind.PLACEMENT, key)
            assert any(revoked.node_id in relayed_holders(r) for r in records)
            holdings = await reader.fetch_holdings(object_id, manifest)
            now, trust = reader.dht.wall_clock(), reader.dht.trust()
            assert revoked.node_id not in {h for h, _ in holdings.statements(now, trust)}
            status = await reader.stat(result.verify_cap)
            assert revoked.node_id not in {h.node_id for h in status.placement.holders()}
            assert revoked.node_id not in {h for h, _ in status.answers}
            for chunk, share in shares[i]:
                listed = status.placement.holders_of(chunk, share)
                assert revoked.node_id not in {h.node_id for h in listed}
                if status.present[chunk][share]:  # only once repaired onto another holder
                    fragment = manifest.chunks[chunk].fragment_ids[share]
                    assert any(mesh.by_id(h.node_id).service.store.has(fragment) for h in listed)
            assert revoked.service.store.has(  # it still has them: only trust changed
                manifest.chunks[min(shares[i])[0]].fragment_ids[min(shares[i])[1]]
            )

        for i in objects:
            result = results[i]
            chunks = result.manifest.chunk_count
            status = await until_whole(
                mesh, client, result.verify_cap, chunks, rule.n, patience(net, 4)
            )
            assert_within(status, rule, {revoked.node_id})
        if net.kind == "memory":
            assert trio.current_time() - started < grace
        for i in objects:
            result = results[i]
            key = (int(RecordKind.PLACEMENT), manifest_key(result.read_cap.object_id))
            own = steward_of(mesh, result.read_cap.object_id).dht.published.get(*key)
            assert own is not None and revoked.node_id not in relayed_holders(own)
            assert await get_bytes(await mesh.client(nursery), result.read_cap) == blobs[i]
        nursery.cancel_scope.cancel()
