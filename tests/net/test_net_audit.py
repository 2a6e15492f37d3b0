"""Storage audits between nodes, on TLS (disk store) and in memory (memory store): an honest
holder proves what it stores; a lying holder (tests/net/hostile.py) fails its first audit."""

from __future__ import annotations

import random

import pytest
import trio
from hostile import LyingHolder

from p2pstore.codec.fragment_ids import LEAF_SIZE, fragment_id
from p2pstore.core.audit import AuditPlanner, AuditSettings, AuditVerdict, Evidence, WatchedFragment
from p2pstore.errors import RemoteError
from p2pstore.net.audits import audit_reply_error, challenge_holder
from p2pstore.net.fragments import FragmentService, store_fragment
from p2pstore.net.node import Node
from p2pstore.store import DiskFragmentStore, MemoryFragmentStore
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
