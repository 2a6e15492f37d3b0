"""Stewards check holders and repair lost fragments: on TLS with disk stores (real time, short
grace periods) and in memory under the mock clock (datacenter-scale grace periods)."""

from __future__ import annotations

import random

import pytest
import trio
from test_net_client import get_bytes, put_bytes

from p2pstore.core.placement import within_rule
from p2pstore.core.records import manifest_key
from p2pstore.core.rules import CodingRule
from p2pstore.net.departure import Departure
from p2pstore.net.scrubber import Scrubber, ScrubSettings
from p2pstore.net.steward import StewardSettings
from p2pstore.testing.storage_mesh import StorageMesh

FR = frozenset({"FR-GES", "FR-IDF"})


def timings(net) -> tuple[float, float]:
    """(grace period, check interval): an hour-scale grace in virtual time, seconds on TLS."""
    return (600.0, 60.0) if net.kind == "memory" else (3.0, 0.5)


def patience(net, graces: float) -> float:
    """How long to wait for repairs: in virtual time a number of grace periods; on TLS a
    minute, as the shared machine may be slow."""
    grace, _ = timings(net)
    return graces * grace if net.kind == "memory" else 60.0


def steward_settings(net) -> StewardSettings:
    _, interval = timings(net)
    return StewardSettings(check_interval=interval, query_timeout=2.0, queries_per_second=200.0)


def rule_of(net, threshold: int = 5, regions: frozenset[str] = FR) -> CodingRule:
    grace, _ = timings(net)
    return CodingRule(
        "test-3-of-6", k=3, n=6, repair_threshold=threshold, regions=regions, grace_period=grace
    )


def repairs_started(mesh: StorageMesh) -> float:
    return sum(
        m.node.metrics.value("p2pstore_repairs_total", outcome="started") for m in mesh.nodes
    )


async def until_whole(mesh: StorageMesh, client, cap, chunks: int, n: int, bound: float):
    """Wait (stewards' rounds, bounded) until every chunk has n live fragments; its status."""
    with trio.fail_after(bound):
        while True:
            status = await client.stat(cap)
            if all(status.live(i) == n for i in range(chunks)):
                return status
            live = [m for m in mesh.nodes if m.node_id not in mesh.dead and m.steward]
            # the next round of a live steward (which may die meanwhile: then a bounded wait)
            with trio.move_on_after(2 * live[-1].steward.settings.check_interval):
                await live[-1].steward.wait_round()


def assert_within(status, rule: CodingRule, dead: set[bytes]) -> None:
    for row in status.placement.chunks:
        holders = [h for h in row if h is not None]
        assert len(holders) == rule.n
        assert within_rule(holders, rule)
        assert all(h.region in rule.regions for h in holders)
        assert not {h.node_id for h in holders} & dead


async def test_killed_datacenters_are_rebuilt_to_n_inside_the_rule(net, clock):
    """Three whole datacenters die: every chunk is at exactly k, still reads back, then comes
    back to n fragments, inside its regions, one per datacenter, only after the grace period."""
    grace, interval = timings(net)
    rule = rule_of(net)
    # dc-0..7: FR, FR, DE, FR, FR, DE, FR, FR -> exactly six French datacenters at put time;
    # dc-8..12 (DE, FR, FR, DE, FR) join later: three French ones repair can use, two it must not.
    mesh = StorageMesh(
        net,
        13,
        steward=steward_settings(net),
        rules=(rule,),
        regions=("FR-GES", "FR-IDF", "DE-BY"),
    )
    data = random.Random(1).randbytes(3 * 64 * 1024 - 77)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery, count=8)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        await mesh.start_more(nursery, mesh.nodes[8:])
        killed = [mesh.nodes[i] for i in (0, 1, 3)]
        for member in killed:
            mesh.kill(member)
        killed_at = trio.current_time()
        status = await client.stat(result.verify_cap)
        assert [status.live(i) for i in range(3)] == [rule.k] * 3
        assert await get_bytes(client, result.read_cap) == data
        if net.kind == "memory":
            await trio.sleep(grace - 2 * interval)
            assert repairs_started(mesh) == 0, "repair began inside the grace period"
        status = await until_whole(
            mesh, client, result.verify_cap, 3, rule.n, bound=patience(net, 6)
        )
        assert trio.current_time() - killed_at >= grace
        assert_within(status, rule, mesh.dead)
        reader = await mesh.client(nursery)
        assert await get_bytes(reader, result.read_cap) == data
        nursery.cancel_scope.cancel()


MEMORY_ONLY = pytest.mark.parametrize("net", ["memory"], indirect=True)


async def test_every_steward_round_is_counted_on_schedule(net, clock):
    """``p2pstore_steward_rounds_total`` grows once per round, every ``check_interval``: an
    operator (and the flood benchmark) sees from it whether the rounds keep their schedule."""
    _, interval = timings(net)
    rule = rule_of(net)
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=(rule,))
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, b"r" * 50_000, rule)
        member = mesh.by_id(result.placement.chunks[0][0].node_id)
        metrics, steward = member.node.metrics, member.steward
        await steward.wait_round()
        began, before = trio.current_time(), metrics.value("p2pstore_steward_rounds_total")
        for _ in range(3):
            await steward.wait_round()
        elapsed = trio.current_time() - began
        assert metrics.value("p2pstore_steward_rounds_total") == before + 3 == steward.rounds
        if net.kind == "memory":  # virtual time: an interval apart, plus a round's queries
            assert elapsed == pytest.approx(3 * interval, abs=interval / 2)
        nursery.cancel_scope.cancel()


@MEMORY_ONLY
async def test_holders_that_die_together_fall_silent_in_one_round_and_are_rebuilt_at_once(
    net, clock
):
    """A holder's silence is dated by the steward's round that missed it, not by when its
    question timed out (later for holders asked later: here a second apart), so holders that
    die together reach the grace period in the same round: one repair rebuilds all three.
    Dated by the timeouts, the last one asked was lost a round after the others in about one
    run in three (on a float tie at its grace period's end), and the chunk stayed at its
    threshold, one short of n, for good."""
    _, interval = timings(net)
    rule = rule_of(net)  # 3-of-6, repaired below 5 live
    settings = StewardSettings(check_interval=interval, query_timeout=2.0, queries_per_second=1.0)
    mesh = StorageMesh(net, 9, steward=settings, rules=(rule,))
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, random.Random(4).randbytes(50_000), rule)  # one chunk
        dead = [h.node_id for h in result.placement.chunks[0][:3]]
        for node_id in dead:
            mesh.kill(mesh.by_id(node_id))
        killed_at = trio.current_time()
        await until_whole(mesh, client, result.verify_cap, 1, rule.n, bound=patience(net, 3))
        live = [m for m in mesh.nodes if m.node_id not in mesh.dead]
        repairers = [
            m
            for m in live
            if m.node.metrics.value("p2pstore_repairs_total", outcome="finished") > 0
        ]
        assert len(repairers) == 1
        assert repairers[0].node.metrics.value("p2pstore_repairs_total", outcome="finished") == 1
        steward = repairers[0].steward
        sinces = {steward.detector.health(node_id).silent_since for node_id in dead}
        assert len(sinces) == 1, f"holders that died together fell silent at {sinces}"
        (since,) = sinces
        assert since is not None and killed_at < since <= killed_at + interval
        assert steward.clock.at_or_after(since) == since, "silence dated off the round grid"
        nursery.cancel_scope.cancel()


@MEMORY_ONLY
async def test_an_outage_shorter_than_the_grace_period_repairs_nothing(net, clock):
    grace, interval = timings(net)
    rule = rule_of(net)
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=(rule,))
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, b"x" * 100_000, rule)
        away = [mesh.by_id(h.node_id) for h in result.placement.chunks[0][:2]]
        for member in away:
            net.network.vanish(member.node.address)
        await trio.sleep(grace - 2 * interval)
        for member in away:
            net.network.reappear(member.node.address)
        await trio.sleep(3 * grace)
        assert repairs_started(mesh) == 0
        status = await client.stat(result.verify_cap)
        assert all(status.live(i) == rule.n for i in range(result.manifest.chunk_count))
        assert status.placement == result.placement
        nursery.cancel_scope.cancel()


async def test_flipped_bits_are_scrubbed_away_and_repaired(net, clock):
    grace, _ = timings(net)
    rule = rule_of(net, threshold=6)  # eager: one lost fragment is repaired
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=(rule,))
    data = random.Random(2).randbytes(100_000)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        holder = mesh.by_id(result.placement.chunks[0][2].node_id)
        fragment = result.manifest.chunks[0].fragment_ids[2]
        store = holder.service.store
        if net.kind == "memory":
            store.corrupt(fragment)
        else:
            path = store.data_dir / "fragments" / fragment.hex()[:2] / fragment.hex()
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0x10
            path.write_bytes(bytes(raw))
        scrubber = Scrubber(
            store,
            holder.node.metrics,
            ScrubSettings(batch_bytes=1 << 30),
            in_threads=net.kind != "memory",
        )
        found = await scrubber.scrub_batch()
        assert fragment in found.corrupt_ids
        assert not store.has(fragment)
        started = trio.current_time()
        status = await until_whole(
            mesh, client, result.verify_cap, 1, rule.n, bound=patience(net, 4)
        )
        if net.kind == "memory":  # a fragment reported missing is lost at once: no grace
            assert trio.current_time() - started < grace
        assert status.placement.chunks[0][2].node_id != holder.node_id
        assert_within(status, rule, set())
        assert await get_bytes(client, result.read_cap) == data
        nursery.cancel_scope.cancel()


@MEMORY_ONLY
async def test_a_steward_killed_mid_repair_is_replaced_and_the_repair_completes(net, clock):
    grace, _ = timings(net)
    rule = rule_of(net)
    mesh = StorageMesh(net, 10, steward=steward_settings(net), rules=(rule,))
    data = random.Random(3).randbytes(60_000)  # one chunk
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        key = int.from_bytes(manifest_key(result.read_cap.object_id), "big")
        steward_node = min(mesh.nodes, key=lambda m: int.from_bytes(m.node_id, "big") ^ key)
        holders = [h for h in result.placement.chunks[0] if h.node_id != steward_node.node_id]
        # Below the threshold now, and still k live once the steward dies too (it may hold one).
        kills = rule.n - rule.k - (len(holders) < rule.n)
        for holder in holders[:kills]:
            mesh.kill(mesh.by_id(holder.node_id))
        steward = steward_node.steward
        stored: list[bytes] = []
        original = steward.client.store_on

        async def store_then_die(holder, fragment_id, data):
            await original(holder, fragment_id, data)
            stored.append(fragment_id)
            mesh.kill(steward_node)
            await trio.sleep_forever()

        steward.client.store_on = store_then_die
        status = await until_whole(mesh, client, result.verify_cap, 1, rule.n, bound=grace * 10)
        assert stored, "the first steward never started its repair"
        assert steward_node.node_id in mesh.dead
        assert_within(status, rule, mesh.dead)
        survivors = [m for m in mesh.nodes if m.node_id not in mesh.dead]
        finished = sum(
            m.node.metrics.value("p2pstore_repairs_total", outcome="finished") for m in survivors
        )
        assert finished >= 1
        assert await get_bytes(client, result.read_cap) == data
        nursery.cancel_scope.cancel()


@MEMORY_ONLY
async def test_a_steward_that_does_not_know_the_rule_leaves_the_object_alone(net, clock, caplog):
    rule = rule_of(net, threshold=6)
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=())
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, b"y" * 50_000, rule)
        mesh.kill(mesh.by_id(result.placement.chunks[0][0].node_id))
        await trio.sleep(3 * rule.grace_period)
        assert repairs_started(mesh) == 0
        assert "does not declare" in caplog.text
        nursery.cancel_scope.cancel()


async def test_a_drained_node_hands_its_fragments_over_and_ends_empty(net, clock):
    """Draining moves every fragment off the node, copied (not rebuilt), even though the lazy
    rule would not repair the loss of one fragment; the object stays whole and within its rule."""
    rule = rule_of(net, threshold=4)
    mesh = StorageMesh(net, 8, steward=steward_settings(net), rules=(rule,))
    data = random.Random(4).randbytes(150_000)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        leaving = mesh.by_id(result.placement.chunks[0][1].node_id)
        held = leaving.service.store.usage().fragments
        assert held >= 1
        departure = Departure(leaving.service, leaving.steward)
        outcome = await departure.drain(deadline=patience(net, 4))
        assert outcome.complete
        assert (outcome.started_with, outcome.released, outcome.left) == (held, held, 0)
        assert leaving.service.store.usage().fragments == 0
        status = await client.stat(result.verify_cap)
        assert all(status.live(i) == rule.n for i in range(result.manifest.chunk_count))
        assert_within(status, rule, {leaving.node_id})
        moved_read = sum(
            m.node.metrics.value("p2pstore_repair_bytes_total", direction="read")
            for m in mesh.nodes
        )
        moved_written = sum(
            m.node.metrics.value("p2pstore_repair_bytes_total", direction="written")
            for m in mesh.nodes
        )
        assert moved_read == moved_written > 0  # copied off the leaving node, not rebuilt
        assert await get_bytes(client, result.read_cap) == data
        nursery.cancel_scope.cancel()


@MEMORY_ONLY
async def test_a_steward_repairs_several_chunks_at_once_within_its_bound(net, clock):
    """Each chunk's repair mostly waits on the network, so a steward runs several, never more
    than ``chunk_repairs_at_once``, and every chunk comes back to n."""
    _, interval = timings(net)
    rule = rule_of(net)
    settings = StewardSettings(
        check_interval=interval, query_timeout=2.0, queries_per_second=200.0,
        chunk_repairs_at_once=2,
    )  # fmt: skip
    mesh = StorageMesh(net, 10, steward=settings, rules=(rule,))
    data = random.Random(2).randbytes(6 * 64 * 1024 - 77)
    running = 0
    most = 0
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery, count=6)  # so every chunk lies on the same six nodes
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        chunks = result.manifest.chunk_count
        assert chunks == 6
        await mesh.start_more(nursery, mesh.nodes[6:])
        for member in mesh.nodes:
            repair_chunk = member.steward.repairer._repair_chunk

            async def counted(*args, _repair=repair_chunk):
                nonlocal running, most
                running += 1
                most = max(most, running)
                try:
                    return await _repair(*args)
                finally:
                    running -= 1

            member.steward.repairer._repair_chunk = counted
        # Two holders of every chunk die: each chunk is at 4 < 5, so all six need repair.
        victims = mesh.nodes[:2]
        for member in victims:
            mesh.kill(member)
        await until_whole(mesh, client, result.verify_cap, chunks, rule.n, patience(net, 6))
        assert most == 2
        assert await get_bytes(client, result.read_cap) == data
        nursery.cancel_scope.cancel()
