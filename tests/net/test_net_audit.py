"""Storage audits between nodes, on TLS (disk store) and in memory (memory store): an honest
holder proves what it stores; a lying holder (tests/net/hostile.py) fails its first audit."""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest
import trio
from hostile import LyingHolder
from rich.console import Console
from test_net_client import get_bytes, put_bytes
from test_net_receipts import steward_of
from test_net_steward import patience, repairs_started, rule_of, steward_settings, timings

from p2pstore.cli.check_command import report_json
from p2pstore.cli.object_status import stat_summary, status_table
from p2pstore.codec.fragment_ids import LEAF_SIZE, fragment_id
from p2pstore.core.audit import AuditPlanner, AuditSettings, AuditVerdict, Evidence, WatchedFragment
from p2pstore.core.rules import SHIPPED_RULES
from p2pstore.errors import PeerUnreachable, RemoteError
from p2pstore.identity import short_id
from p2pstore.net.audits import audit_reply_error, challenge_holder
from p2pstore.net.fragments import FragmentService, store_fragment
from p2pstore.net.node import Node
from p2pstore.net.repairer import Known
from p2pstore.net.steward import Steward
from p2pstore.store import DiskFragmentStore, MemoryFragmentStore
from p2pstore.testing.storage_mesh import StorageMesh
from p2pstore.wire import AuditChallenge, AuditProofReply, HasFragments, HasFragmentsReply

QUOTA = 1 << 20
FAST = AuditSettings(min_per_holder_per_hour=36_000, answer_timeout=2.0)  # ~10 a second


def fragments(*sizes: int) -> dict[bytes, bytes]:
    rng = random.Random(sum(sizes))
    return {fragment_id(data): data for data in (rng.randbytes(size) for size in sizes)}


def honest_holder(net, tmp_path) -> tuple[Node, FragmentService]:
    credentials = net.credentials()
    node = Node(credentials, net.transport(credentials))
    if net.kind == "tls":
        return node, FragmentService(node, DiskFragmentStore(tmp_path / "holder", QUOTA))
    return node, FragmentService(node, MemoryFragmentStore(QUOTA), in_threads=False)


async def steward_node(net, nursery) -> Node:
    credentials = net.credentials()
    steward = Node(credentials, net.transport(credentials), listen=False)
    await nursery.start(steward.run)
    return steward


def planner_for(holder_id: bytes, stored: dict[bytes, bytes]) -> AuditPlanner:
    planner = AuditPlanner(FAST, random.Random(4), audit_reply_error)
    watched = [WatchedFragment(holder_id, fid, len(data)) for fid, data in stored.items()]
    planner.watch(watched, trio.current_time())
    return planner


async def audit_round(steward: Node, planner: AuditPlanner, address: str) -> list[Evidence]:
    """What a steward does when the planner's deadline comes: judge the late, send what is due."""
    wake = planner.next_deadline()
    assert wake is not None
    await trio.sleep_until(wake)
    now = trio.current_time()
    evidence = planner.expire(now)
    for challenge in planner.due(now):
        judged = await challenge_holder(steward, address, challenge, planner)
        assert judged is not None
        evidence.append(judged)
    return evidence


async def test_an_honest_holder_proves_every_fragment_it_stores(net, clock, tmp_path):
    holder, _service = honest_holder(net, tmp_path)
    stored = fragments(1, LEAF_SIZE, LEAF_SIZE + 1, 3 * LEAF_SIZE + 7)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(holder.run)
            steward = await steward_node(net, nursery)
            holder_id = holder.identity.node_id
            for fid, data in stored.items():
                await store_fragment(steward, holder_id, holder.address, fid, data)
            planner = planner_for(holder_id, stored)
            evidence: list[Evidence] = []
            while len(evidence) < 12:
                evidence += await audit_round(steward, planner, holder.address)
            assert [e.verdict for e in evidence] == [AuditVerdict.PASSED] * len(evidence)
            assert {e.challenge.fragment_id for e in evidence} == set(stored)
            assert planner.results(holder_id).passed == len(evidence)
            assert all(e.answer_digest is not None for e in evidence)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("mode", "verdict"),
    [
        ("garbage", AuditVerdict.WRONG_PROOF),
        ("other-leaf", AuditVerdict.WRONG_PROOF),
        ("not-found", AuditVerdict.MISSING),
        ("silent", AuditVerdict.LATE),
    ],
)
async def test_a_lying_holder_says_it_has_the_fragment_and_fails_its_first_audit(
    net, clock, mode, verdict
):
    stored = fragments(3 * LEAF_SIZE + 5)
    (fid,) = stored
    credentials = net.credentials()
    keep = frozenset(stored) if mode == "other-leaf" else frozenset()
    liar = LyingHolder(Node(credentials, net.transport(credentials)), audit=mode, keep=keep)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(liar.node.run)
            steward = await steward_node(net, nursery)
            await store_fragment(steward, liar.node_id, liar.node.address, fid, stored[fid])
            has = await steward.call(liar.node_id, liar.node.address, HasFragments((fid,)))
            assert has == HasFragmentsReply(present=(True,))  # the lie HasFragments cannot see
            planner = planner_for(liar.node_id, stored)
            evidence = await audit_round(steward, planner, liar.node.address)
            assert [e.verdict for e in evidence] == [verdict]
            (first,) = evidence
            assert first.challenge.fragment_id == fid
            assert first.challenge.deadline - first.challenge.sent_at == FAST.answer_timeout
            if mode == "silent":
                assert first.answered_at is None and trio.current_time() >= first.challenge.deadline
            assert liar.challenges == [first.challenge.message]
            results = planner.results(liar.node_id)
            assert (results.passed, results.failed, results.last) == (0, 1, first)
            nursery.cancel_scope.cancel()


async def test_a_holder_that_cannot_be_dialled_is_not_judged(net, clock, tmp_path):
    """Down is the grace period's business: the challenge is withdrawn, no verdict."""
    holder, _service = honest_holder(net, tmp_path)
    stored = fragments(LEAF_SIZE)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(holder.run)
            steward = await steward_node(net, nursery)
            holder_id, address = holder.identity.node_id, holder.address
            (fid,) = stored
            await store_fragment(steward, holder_id, address, fid, stored[fid])
            planner = planner_for(holder_id, stored)
            await holder.stop()
            if net.kind == "memory":
                net.network.vanish(address)
            wake = planner.next_deadline()
            await trio.sleep_until(wake)
            (challenge,) = planner.due(trio.current_time())
            with pytest.raises(PeerUnreachable):
                await challenge_holder(steward, address, challenge, planner)
            assert planner.outstanding() == [] and planner.audited() == {}
            assert trio.current_time() < challenge.deadline
            nursery.cancel_scope.cancel()


async def test_a_holder_that_lost_or_rotted_a_fragment_is_found_missing(net, clock, tmp_path):
    holder, service = honest_holder(net, tmp_path)
    stored = fragments(LEAF_SIZE + 1, 2 * LEAF_SIZE)
    lost, rotten = sorted(stored)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(holder.run)
            steward = await steward_node(net, nursery)
            holder_id = holder.identity.node_id
            for fid, data in stored.items():
                await store_fragment(steward, holder_id, holder.address, fid, data)
            service.store.delete(lost)
            if isinstance(service.store, MemoryFragmentStore):
                service.store.corrupt(rotten)
            else:
                path = service.store.data_dir / "fragments" / rotten.hex()[:2] / rotten.hex()
                raw = bytearray(path.read_bytes())
                raw[-1] ^= 0x01
                path.write_bytes(bytes(raw))
            planner = planner_for(holder_id, stored)
            seen: dict[bytes, AuditVerdict] = {}
            while len(seen) < 2:
                for e in await audit_round(steward, planner, holder.address):
                    seen[e.challenge.fragment_id] = e.verdict
            assert seen == {lost: AuditVerdict.MISSING, rotten: AuditVerdict.MISSING}
            assert not service.store.has(rotten)  # removed on the audit's read, to be repaired
            nursery.cancel_scope.cancel()


async def test_a_hostile_challenger_gets_refusals_and_the_holder_goes_on(net, clock, tmp_path):
    holder, _service = honest_holder(net, tmp_path)
    stored = fragments(LEAF_SIZE + 1)
    (fid,) = stored
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(holder.run)
            steward = await steward_node(net, nursery)
            holder_id, address = holder.identity.node_id, holder.address
            await store_fragment(steward, holder_id, address, fid, stored[fid])
            with pytest.raises(RemoteError) as beyond:
                await steward.call(holder_id, address, AuditChallenge(fid, 2, 7))
            assert beyond.value.code == "RemoteProtocolError"
            assert "not one of the 2" in str(beyond.value)
            with pytest.raises(RemoteError) as unknown:
                await steward.call(holder_id, address, AuditChallenge(fragment_id(b"?"), 0, 7))
            assert unknown.value.code == "FragmentNotFound"
            reply = await steward.call(holder_id, address, AuditChallenge(fid, 1, 2**64 - 1))
            assert isinstance(reply, AuditProofReply) and reply.nonce == 2**64 - 1
            assert audit_reply_error(fid, 1, reply) is None and len(reply.leaf) == 1
            nursery.cancel_scope.cancel()


# -- stewards audit the holders of their objects (a mesh, both transports) ---------------------


def audit_settings(net) -> AuditSettings:
    """About one audit a minute per holder in virtual time, two a second on TLS."""
    if net.kind == "memory":
        return AuditSettings(min_per_holder_per_hour=60, answer_timeout=5.0)
    return AuditSettings(min_per_holder_per_hour=7200, answer_timeout=5.0)


def auditing_mesh(net, count: int = 8, *, stewards: bool = True):
    rule = rule_of(net, threshold=6)  # one share lost is one share repaired
    settings = dataclasses.replace(steward_settings(net), audits=audit_settings(net))
    return StorageMesh(net, count, steward=settings if stewards else None, rules=(rule,)), rule


def shares_of(placement, node_id: bytes) -> set[tuple[int, int]]:
    return {
        (chunk, share)
        for chunk, row in enumerate(placement.chunks)
        for share, holder in enumerate(row)
        if holder is not None and holder.node_id == node_id
    }


def held_elsewhere(status, shares: set[tuple[int, int]], liar: bytes) -> bool:
    """Whether every share in ``shares`` has a holder other than ``liar`` that signed for it."""
    return all(
        any(
            h.node_id != liar and status.answer(chunk, share, h.node_id)
            for h in status.placement.holders_of(chunk, share)
        )
        for chunk, share in shares
    )


def rendered(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


async def test_a_lying_holder_fails_its_first_audit_is_rebuilt_elsewhere_and_named(
    net, clock, caplog
):
    """The issue's liar: after the put, a holder keeps nothing but says it has everything and
    signs receipts for it.  Its steward's first audit of it fails, every share it held is
    rebuilt on other holders without waiting for the grace period, the steward's metrics and
    log name it, and ``stat`` names it too."""
    caplog.set_level(logging.WARNING, logger="p2pstore.steward")
    grace, _ = timings(net)
    mesh, rule = auditing_mesh(net)
    data = random.Random(13).randbytes(3 * 64 * 1024 - 77)  # three chunks
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        steward = steward_of(mesh, result.read_cap.object_id)
        liar_id = next(
            h.node_id
            for row in result.placement.chunks
            for h in row
            if h is not None and h.node_id != steward.node_id
        )
        shares = shares_of(result.placement, liar_id)
        liar = LyingHolder.taking_over(mesh.by_id(liar_id).node, wall_clock=mesh.wall_clock)
        started = trio.current_time()
        auditor = steward.steward.auditor
        with trio.fail_after(patience(net, 1)):
            while not auditor.failures:
                await steward.steward.wait_round()
        first = auditor.failures[0].evidence
        assert first.challenge.holder == liar_id and first.verdict is AuditVerdict.WRONG_PROOF
        assert liar.challenges[0] == first.challenge.message  # its first audit failed
        assert all(m.steward.auditor.planner.results(liar_id).passed == 0 for m in mesh.nodes)

        with trio.fail_after(patience(net, 4)):
            while True:
                status = await client.stat(result.verify_cap)
                if held_elsewhere(status, shares, liar_id) and all(
                    status.live(i) == rule.n for i in range(3)
                ):
                    break
                await steward.steward.wait_round()
        if net.kind == "memory":
            assert trio.current_time() - started < grace  # counted lost at once, no grace
        assert {f.evidence.challenge.holder for f in auditor.failures} == {liar_id}
        failed_on = {f.evidence.challenge.fragment_id for f in auditor.failures}
        ids = result.manifest.chunks
        assert {ids[c].fragment_ids[s] for c, s in shares} <= failed_on  # every share it held

        (audit,) = status.audit_failures()  # stat audited every holder once: the liar failed
        assert audit.challenge.holder == liar_id
        assert {e.verdict for h, e in status.audits.items() if h != liar_id} == {
            AuditVerdict.PASSED
        }
        text = rendered(status_table(status))
        assert f"{short_id(liar_id)}" in text and "failed an audit" in text
        summary = stat_summary(status)
        assert [a["node_id"] for a in summary["audit_failures"]] == [liar_id.hex()]

        metrics = steward.node.metrics
        liar_dc = mesh.by_id(liar_id).datacenter
        assert metrics.value("p2pstore_audits_total", outcome="wrong-proof") == len(
            auditor.failures
        )
        failures = metrics.value(
            "p2pstore_holder_audit_failures_total", holder=liar_id.hex(), datacenter=liar_dc
        )
        assert failures == len(auditor.failures)
        logged = [r for r in caplog.records if getattr(r, "event", None) == "audit_failed"]
        assert logged and {r.holder for r in logged} == {liar_id.hex()}
        assert all(r.answer_sha256 and r.verdict == "wrong-proof" for r in logged)
        reader = await mesh.client(nursery)
        assert await get_bytes(reader, result.read_cap) == data
        nursery.cancel_scope.cancel()


async def test_honest_holders_are_never_counted_lost_by_audits(net, clock):
    """Many rounds of audits at a high rate over honest holders: every audit passes, nothing
    is counted lost, nothing is repaired."""
    _, interval = timings(net)
    mesh, rule = auditing_mesh(net)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        results = [
            await put_bytes(client, random.Random(seed).randbytes(100_000), rule)
            for seed in (1, 2)
        ]
        rounds = 40 if net.kind == "memory" else 24
        await trio.sleep(rounds * interval)
        auditors = [m.steward.auditor for m in mesh.nodes]
        audited = [c for a in auditors for c in a.planner.audited().values()]
        assert sum(c.passed for c in audited) >= (60 if net.kind == "memory" else 30)
        assert sum(c.failed for c in audited) == 0
        assert not any(a.failures for a in auditors)
        assert not any(m.steward.evidence.fragments for m in mesh.nodes)
        assert repairs_started(mesh) == 0
        for result in results:
            status = await client.stat(result.verify_cap)
            assert all(status.live(i) == rule.n for i in range(len(status.present)))
            assert status.audits and not status.audit_failures()
        nursery.cancel_scope.cancel()


async def test_check_audits_every_holder_once_and_repairs_what_a_liar_failed(net, clock):
    """``p2pstore check --repair``'s steward (no stewards in the mesh): each holder is audited
    once, the liar fails, and the share it failed on is rebuilt at once elsewhere."""
    mesh, rule = auditing_mesh(net, stewards=False)
    data = random.Random(21).randbytes(60_000)  # one chunk
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, data, rule)
        liar_id = result.placement.chunks[0][2].node_id
        LyingHolder.taking_over(mesh.by_id(liar_id).node, wall_clock=mesh.wall_clock)
        rules = {**SHIPPED_RULES, rule.name: rule}
        checker = Steward(client.dht, rules, client_settings=client.settings)
        with trio.fail_after(120):
            report = await checker.check_objects(
                [Known.of(result.manifest)], repair=True, grace_period=0.0, audit=True
            )
        holders = {h.node_id for h in result.placement.chunks[0] if h is not None}
        assert {e.challenge.holder for e in report.audits} == holders
        (failed,) = [e for e in report.audits if e.verdict.failed]
        assert failed.challenge.holder == liar_id
        (repair,) = report.repairs
        assert repair.shares == (2,) and liar_id not in {h.node_id for h in repair.holders}
        assert report_json(report)["audit_failures"][0]["node_id"] == liar_id.hex()
        assert await get_bytes(await mesh.client(nursery), result.read_cap) == data
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("net", ["memory"], indirect=True)
async def test_audits_repair_nothing_of_a_holder_killed_inside_the_grace_period(net, clock):
    """A holder that dies between rounds is audited no more (its challenges cannot be dialled):
    nothing fails, nothing is repaired before the grace period; afterwards the round repairs."""
    grace, interval = timings(net)
    mesh, rule = auditing_mesh(net)
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        result = await put_bytes(client, random.Random(5).randbytes(100_000), rule)
        steward = steward_of(mesh, result.read_cap.object_id)
        await trio.sleep(5 * interval)  # audits under way
        victim = next(
            mesh.by_id(h.node_id)
            for h in result.placement.chunks[0]
            if h is not None and h.node_id != steward.node_id
        )
        mesh.kill(victim)
        await trio.sleep(grace - interval)
        assert repairs_started(mesh) == 0
        assert not any(m.steward.auditor.failures for m in mesh.nodes)
        passed = sum(c.passed for c in steward.steward.auditor.planner.audited().values())
        assert passed >= 5
        with trio.fail_after(3 * grace):
            while repairs_started(mesh) == 0:
                await steward.steward.wait_round()
        assert not any(m.steward.auditor.failures for m in mesh.nodes)
        nursery.cancel_scope.cancel()
