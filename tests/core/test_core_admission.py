"""Admission: the node's request slots are bounded and shared fairly, a peer with nothing in
flight is served while any slot is free, and costly requests are rate-limited per identity with
an exact retry hint."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from p2pstore.core.admission import Admission, AdmissionSettings
from p2pstore.wire import (
    FindNode,
    FindValue,
    GetFragment,
    GetFragmentReply,
    Ping,
    PutFragment,
    SignedRecord,
    Store,
)

PING = Ping(nonce=1, padding=b"")
FIND = FindNode(target=bytes(20))
PEERS = [bytes([i]) * 20 for i in range(6)]
MiB = 1024 * 1024


class FairShare(RuleBasedStateMachine):
    """Peers start and finish requests in any order; the bounds hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = AdmissionSettings(max_requests=16, max_peer_requests=8)
        self.admission = Admission(self.settings)
        self.held: dict[bytes, int] = dict.fromkeys(PEERS, 0)

    @rule(peer=st.sampled_from(PEERS))
    def ask(self, peer: bytes) -> None:
        before = self.admission.in_flight
        serving = sum(1 for n in self.held.values() if n)
        refusal = self.admission.admit(peer, PING, now=0.0)
        if refusal is None:
            self.held[peer] += 1
            return
        assert refusal.retry_after == self.settings.retry_after
        if self.held[peer] == 0:  # a newcomer is refused only by a full node
            assert before == self.settings.max_requests
        elif self.held[peer] < self.settings.max_peer_requests and 2 * before < 16:
            raise AssertionError(f"refused below half load: {refusal}")
        assert serving >= 1

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from([p for p, n in self.held.items() if n]))
        self.admission.done(peer, PING, None, now=0.0)
        self.held[peer] -= 1

    @invariant()
    def bounded(self) -> None:
        assert self.admission.in_flight == sum(self.held.values()) <= self.settings.max_requests
        for peer, held in self.held.items():
            assert self.admission.held_by(peer) == held <= self.settings.max_peer_requests


TestFairShare = FairShare.TestCase
TestFairShare.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_greedy_peers_leave_room_for_a_newcomer():
    admission = Admission(AdmissionSettings(max_requests=256, max_peer_requests=64))
    greedy = PEERS[:5]
    admitted = {peer: 0 for peer in greedy}
    for _ in range(100):
        for peer in greedy:
            admitted[peer] += admission.admit(peer, PING, now=0.0) is None
    assert admission.in_flight <= 192  # the last quarter waits for peers with nothing in flight
    assert max(admitted.values()) - min(admitted.values()) <= 1  # an equal share each
    assert admission.admit(PEERS[5], PING, now=0.0) is None


@given(st.integers(1, 50))
def test_one_greedy_peer_gets_its_share_not_the_node(extra):
    admission = Admission(AdmissionSettings(max_requests=256, max_peer_requests=64))
    refusals = [admission.admit(PEERS[0], PING, now=0.0) for _ in range(64 + extra)]
    assert refusals.count(None) == 64
    assert {r.reason for r in refusals if r is not None} == {"peer_busy"}
    assert admission.admit(PEERS[1], PING, now=0.0) is None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (FIND, "lookup_rate"),
        (FindValue(kind=1, key=bytes(20)), "lookup_rate"),
        (
            Store(
                record=SignedRecord(
                    kind=1, key=bytes(20), value=b"v", sequence=1, expires_at=1,
                    publisher_key=bytes(32), signature=bytes(64), certificate=b"c",
                )
            ),
            "store_rate",
        ),
    ],
)
def test_lookups_and_stores_are_rate_limited_per_identity(message, reason):
    admission = Admission(
        AdmissionSettings(lookups_per_second=10, lookup_burst=20, stores_per_second=10,
                          store_burst=20)
    )  # fmt: skip
    for _ in range(20):
        assert admission.admit(PEERS[0], message, now=5.0) is None
        admission.done(PEERS[0], message, None, now=5.0)
    refusal = admission.admit(PEERS[0], message, now=5.0)
    assert refusal is not None and refusal.reason == reason
    assert refusal.retry_after == pytest.approx(0.1)
    assert admission.in_flight == 0  # a refused request holds no slot
    assert admission.admit(PEERS[1], message, now=5.0) is None  # another identity is served
    assert admission.admit(PEERS[0], message, now=5.0 + refusal.retry_after) is None


def test_fragment_bytes_in_are_limited_before_and_bytes_out_after():
    admission = Admission(
        AdmissionSettings(fragment_bytes_per_second=4 * MiB, fragment_burst=8 * MiB)
    )
    put = PutFragment(fragment_id=bytes(32), data=bytes(3 * MiB))
    assert admission.admit(PEERS[0], put, now=0.0) is None
    assert admission.admit(PEERS[0], put, now=0.0) is None
    refusal = admission.admit(PEERS[0], put, now=0.0)  # 6 MiB taken, 2 left, 3 asked
    assert refusal is not None and refusal.reason == "fragment_in_rate"
    assert refusal.retry_after == pytest.approx(0.25)

    get = GetFragment(fragment_id=bytes(32))
    for _ in range(3):  # served while not in debt; each reply's size is charged after
        assert admission.admit(PEERS[1], get, now=0.0) is None
        admission.done(PEERS[1], get, GetFragmentReply(data=bytes(4 * MiB)), now=0.0)
    refusal = admission.admit(PEERS[1], get, now=0.0)  # 12 MiB served, 8 of burst: 4 in debt
    assert refusal is not None and refusal.reason == "fragment_out_rate"
    assert refusal.retry_after == pytest.approx(1.0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_peer_requests"):
        AdmissionSettings(max_requests=10, max_peer_requests=11)
    with pytest.raises(ValueError, match="lookups_per_second"):
        AdmissionSettings(lookups_per_second=0)
