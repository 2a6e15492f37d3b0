"""The handshake gate: whatever strangers do, the bounds hold, members' handshakes find a slot
while a stranger holds one, only strangers are reclaimed (oldest first), and an address starts
no more failed handshakes than its bucket allows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.handshakes import (
    PER_ADDRESS,
    RATE,
    SLOTS,
    Admitted,
    HandshakeGate,
    HandshakeLimits,
    Refused,
)

SOURCES = [f"10.0.0.{i}" for i in range(6)]

events = st.lists(
    st.tuples(
        st.sampled_from(["connect", "succeed", "fail", "member"]),
        st.integers(0, len(SOURCES) - 1),
        st.floats(0.0, 3.0),  # seconds later
        st.integers(0, 40),  # which running handshake ends
    ),
    max_size=120,
)


@st.composite
def valid_limits(draw: st.DrawFn) -> HandshakeLimits:
    slots = draw(st.integers(1, 12))
    return HandshakeLimits(
        slots=slots,
        member_slots=draw(st.integers(0, slots - 1)),
        per_address=draw(st.integers(1, 8)),
        rate=draw(st.floats(0.1, 10.0)),
        burst=draw(st.floats(1.0, 20.0)),
        member_memory=draw(st.floats(1.0, 100.0)),
    )


@settings(max_examples=300)
@given(valid_limits(), events)
def test_bounds_hold_and_members_are_served_first(limits, steps):
    gate = HandshakeGate(limits)
    running: dict[int, tuple[str, bool]] = {}  # ticket -> (source, member), oldest first
    admitted = {s: 0 for s in SOURCES}
    authenticated = {s: 0 for s in SOURCES}
    now = 0.0
    for kind, index, later, pick in steps:
        now += later
        source = SOURCES[index]
        if kind == "member":
            gate.seen_member(source, now)
        elif kind == "connect":
            member = gate.is_member(source, now)
            strangers_before = [t for t, (_s, m) in running.items() if not m]
            from_source = sum(1 for s, _m in running.values() if s == source)
            decision = gate.admit(source, now)
            if isinstance(decision, Refused):
                if decision.reason == PER_ADDRESS:
                    assert from_source == limits.per_address
                elif decision.reason == SLOTS:
                    assert len(running) == limits.slots
                    assert not member or not strangers_before  # a member takes a stranger's
                else:
                    assert decision.reason == RATE
            else:
                assert decision.member == member
                if decision.reclaim is not None:
                    assert decision.reclaim == strangers_before[0]  # the oldest stranger's
                    del running[decision.reclaim]
                running[decision.ticket] = (source, member)
                admitted[source] += 1
        elif running:
            ticket = list(running)[pick % len(running)]
            ended, _member = running.pop(ticket)
            gate.finished(ticket, now, authenticated=kind == "succeed")
            authenticated[ended] += kind == "succeed"
        assert gate.in_progress == len(running) <= limits.slots
        assert gate.strangers == sum(1 for _s, m in running.values() if not m)
        assert gate.strangers <= limits.slots - limits.member_slots
        for s in SOURCES:
            assert gate.from_source(s) == sum(1 for r, _m in running.values() if r == s)
            assert gate.from_source(s) <= limits.per_address
            # Tokens spent on handshakes not (yet) authenticated never exceed the bucket's.
            allowed = limits.burst + limits.rate * now
            assert admitted[s] - authenticated[s] <= allowed + 1e-6 * allowed


def test_strangers_from_many_addresses_cannot_hold_the_members_share():
    gate = HandshakeGate(HandshakeLimits(slots=8, member_slots=2, per_address=2, burst=10))
    gate.seen_member("192.0.2.1", now=0.0)
    stalls = [gate.admit(f"10.0.0.{i}", now=1.0) for i in range(20)]
    assert all(isinstance(d, Admitted) for d in stalls)  # each reclaims the oldest stranger
    assert gate.strangers == 6 and gate.in_progress == 6
    for _ in range(2):
        member = gate.admit("192.0.2.1", now=1.0)
        assert isinstance(member, Admitted) and member.member and member.reclaim is None
    third = gate.admit("192.0.2.1", now=1.0)
    assert isinstance(third, Refused) and third.reason == PER_ADDRESS
    gate.seen_member("192.0.2.9", now=1.0)
    other = gate.admit("192.0.2.9", now=1.0)
    assert isinstance(other, Admitted) and other.reclaim is not None
    assert gate.strangers == 5 and gate.in_progress == 8


def test_an_address_whose_handshakes_succeed_is_never_rate_limited():
    gate = HandshakeGate(HandshakeLimits(rate=1.0, burst=2.0))
    for step in range(100):
        decision = gate.admit("127.0.0.1", now=step * 0.001)
        assert isinstance(decision, Admitted)
        gate.finished(decision.ticket, now=step * 0.001, authenticated=True)
    failing = [gate.admit("127.0.0.2", now=1.0) for _ in range(4)]
    assert [type(d) for d in failing] == [Admitted, Admitted, Refused, Refused]
    assert isinstance(failing[2], Refused) and failing[2].reason == RATE
    assert isinstance(gate.admit("127.0.0.2", now=2.0), Admitted)  # one more a second


def test_a_member_address_is_forgotten_after_member_memory():
    gate = HandshakeGate(HandshakeLimits(member_memory=60.0))
    decision = gate.admit("10.0.0.1", now=0.0)
    assert isinstance(decision, Admitted) and not decision.member
    gate.finished(decision.ticket, now=0.0, authenticated=True)
    assert gate.is_member("10.0.0.1", now=59.0)
    assert not gate.is_member("10.0.0.1", now=60.0)
    gate.finished(decision.ticket, now=0.0, authenticated=True)  # ended twice: ignored
    assert gate.in_progress == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"slots": 0},
        {"slots": 4, "member_slots": 4},
        {"member_slots": -1},
        {"per_address": 0},
        {"rate": 0.0},
        {"burst": 0.5},
        {"member_memory": 0.0},
    ],
)
def test_limits_are_checked(bad):
    with pytest.raises(ValueError):
        HandshakeLimits(**bad)
