"""The audit planner: rate, unpredictability, one challenge outstanding per holder, verdicts."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.codec.fragment_ids import AuditProof, audit_proof, audit_proof_error, fragment_id
from p2pstore.core.audit import (
    DAY,
    HOUR,
    AuditPlanner,
    AuditSettings,
    AuditVerdict,
    Challenge,
    WatchedFragment,
)
from p2pstore.wire import AuditProofReply

LEAF = 16 * 1024


def check(fid: bytes, index: int, reply: AuditProofReply) -> str | None:
    return audit_proof_error(fid, index, AuditProof(reply.leaf, reply.path, reply.length))


def holder(i: int) -> bytes:
    return bytes([i]) * 20


class Mesh:
    """Fragments of random bytes on holders; each holder answers from what it really keeps."""

    def __init__(self, holders: int, per_holder: int, size: int = 3 * LEAF + 5, seed: int = 0):
        rng = random.Random(seed)
        self.data: dict[bytes, bytes] = {}
        self.watched: list[WatchedFragment] = []
        for h in range(holders):
            for _ in range(per_holder):
                data = rng.randbytes(size)
                fid = fragment_id(data)
                self.data[fid] = data
                self.watched.append(WatchedFragment(holder(h), fid, size))

    def proof(self, challenge: Challenge) -> AuditProofReply:
        proof = audit_proof(self.data[challenge.fragment_id], challenge.leaf_index)
        return AuditProofReply(challenge.nonce, proof.leaf, proof.path, proof.length)


def planner(config: AuditSettings | None = None, seed: int = 1) -> AuditPlanner:
    return AuditPlanner(config or AuditSettings(), random.Random(seed), check)


def run(audits: AuditPlanner, until: float, answer) -> list:
    """Drive the planner as a steward would: sleep to next_deadline, send what is due, answer
    at once.  Returns every piece of evidence."""
    evidence = []
    now = 0.0
    while (wake := audits.next_deadline()) is not None and wake <= until:
        now = max(now, wake)
        evidence += audits.expire(now)
        for challenge in audits.due(now):
            reply, error = answer(challenge)
            evidence.append(audits.answered(challenge, reply, error, now + 0.01))
    return evidence


# --- rate ------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(per_hour=st.sampled_from([2.0, 4.0, 30.0]), seed=st.integers(0, 10_000))
def test_a_small_holder_is_audited_at_the_floor_rate(per_hour, seed):
    mesh = Mesh(holders=3, per_holder=2)
    audits = planner(AuditSettings(min_per_holder_per_hour=per_hour), seed)
    audits.watch(mesh.watched, 0.0)
    hours = 2000 / per_hour  # ~2,000 audits per holder expected: 7 sigma is ~15%
    evidence = run(audits, hours * HOUR, lambda c: (None, ("busy", "")))
    per_holder = Counter(e.challenge.holder for e in evidence)
    for h in range(3):
        assert 0.85 * 2000 < per_holder[holder(h)] < 1.15 * 2000


def test_a_large_holder_is_audited_at_its_fraction_per_day():
    config = AuditSettings(fraction_per_day=0.5, min_per_holder_per_hour=0.1)
    assert config.rate(20_000) == pytest.approx(10_000 / DAY)
    watched = [WatchedFragment(holder(1), i.to_bytes(32, "big"), LEAF) for i in range(20_000)]
    audits = planner(config, seed=3)
    audits.watch(watched, 0.0)
    evidence = run(audits, DAY / 5, lambda c: (None, ("FragmentNotFound", "gone")))
    assert 0.9 * 2_000 < len(evidence) < 1.1 * 2_000


def test_the_default_rate_and_its_traffic_per_tib_as_documented():
    config = AuditSettings()
    fragments_per_tib = 2**40 // 2**20
    audits_per_day = config.rate(fragments_per_tib) * DAY
    assert round(audits_per_day) == 20_972
    assert config.rate(1) * HOUR == 4.0  # the floor
    assert audits_per_day * 16_674 / 1e6 == pytest.approx(350, rel=0.01)  # MB per TiB per day


# --- what is challenged ----------------------------------------------------------------------


def test_fragment_and_leaf_choices_are_spread_over_everything_watched():
    size = 8 * LEAF
    watched = [WatchedFragment(holder(1), bytes([i]) * 32, size) for i in range(8)]
    audits = planner(AuditSettings(min_per_holder_per_hour=60), seed=5)
    audits.watch(watched, 0.0)
    evidence = run(audits, 6400 / 60 * HOUR, lambda c: (None, ("busy", "x")))
    fragments = Counter(e.challenge.fragment_id for e in evidence)
    leaves = Counter(e.challenge.leaf_index for e in evidence)
    assert len(evidence) > 5000
    assert sorted(leaves) == list(range(8)) and len(fragments) == 8
    for counts in (fragments, leaves):  # each of 8 values ~1/8 of the draws
        assert all(abs(n / len(evidence) - 1 / 8) < 0.03 for n in counts.values())
    assert len({e.challenge.nonce for e in evidence}) == len(evidence)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 5 * LEAF), min_size=1, max_size=6),
    holders=st.integers(1, 4),
    seed=st.integers(0, 1000),
    steps=st.lists(st.floats(0, 4 * HOUR), min_size=1, max_size=30),
    answers=st.lists(st.sampled_from(["proof", "missing", "silent", "late"]), min_size=30),
)
def test_invariants_of_any_run(sizes, holders, seed, steps, answers):
    """At most one challenge outstanding per holder, only on watched fragments and real leaves,
    each judged once; nothing is due before next_deadline."""
    watched = [
        WatchedFragment(holder(h), bytes([h, i]) * 16, size)
        for h in range(holders)
        for i, size in enumerate(sizes)
    ]
    audits = planner(AuditSettings(min_per_holder_per_hour=10), seed)
    audits.watch(watched, 0.0)
    now = 0.0
    judged: set[int] = set()
    for step, answer in zip(steps, answers, strict=False):
        wake = audits.next_deadline()
        assert wake is not None
        if now + step < wake:
            assert audits.due(now + step) == [] and audits.expire(now + step) == []
        now += step
        for evidence in audits.expire(now):
            assert evidence.verdict is AuditVerdict.LATE and evidence.challenge.deadline <= now
            judged.add(evidence.challenge.nonce)
        issued = audits.due(now)
        outstanding = audits.outstanding()
        assert len({c.holder for c in outstanding}) == len(outstanding)
        for challenge in issued:
            target = next(w for w in watched if w.fragment_id == challenge.fragment_id)
            assert target.holder == challenge.holder
            assert 0 <= challenge.leaf_index < max(1, math.ceil(target.length / LEAF))
            assert challenge.deadline == now + audits.settings.answer_timeout
            assert challenge.nonce not in judged
            if answer == "silent":
                continue
            at = challenge.deadline + 1 if answer == "late" else now
            error = ("FragmentNotFound", "no") if answer == "missing" else None
            reply = AuditProofReply(challenge.nonce, b"", (), 0) if answer != "missing" else None
            evidence = audits.answered(challenge, reply, error, at)
            assert evidence is not None and evidence.verdict.failed
            assert audits.answered(challenge, reply, error, at) is None  # judged once
            judged.add(challenge.nonce)
    total = sum(audits.results(holder(h)).failed for h in range(holders))
    assert total == len(judged)


def test_the_same_seed_gives_the_same_challenges():
    mesh = Mesh(holders=3, per_holder=4)

    def trace(seed):
        audits = planner(seed=seed)
        audits.watch(reversed(mesh.watched), 0.0)  # the order given does not matter
        return [e.challenge for e in run(audits, 5 * HOUR, lambda c: (mesh.proof(c), None))]

    assert trace(9) == trace(9) != trace(10)


def test_a_holder_no_longer_watched_is_dropped_after_its_challenge_is_judged():
    mesh = Mesh(holders=2, per_holder=1)
    audits = planner(AuditSettings(min_per_holder_per_hour=60))
    audits.watch(mesh.watched, 0.0)
    now = audits.next_deadline()
    (first, *_) = audits.due(now)
    audits.watch([w for w in mesh.watched if w.holder != first.holder], now)
    evidence = audits.answered(first, mesh.proof(first), None, now)
    assert evidence is not None and evidence.verdict is AuditVerdict.PASSED
    later = run(audits, 10 * HOUR, lambda c: (mesh.proof(c), None))
    assert later and all(e.challenge.holder != first.holder for e in later)


# --- verdicts --------------------------------------------------------------------------------


def one_challenge(mesh: Mesh) -> tuple[AuditPlanner, Challenge]:
    audits = planner(AuditSettings(min_per_holder_per_hour=60))
    audits.watch(mesh.watched[:1], 0.0)
    wake = audits.next_deadline()
    return audits, audits.due(wake)[0]


def flip(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[bit // 8 % len(changed)] ^= 1 << (bit % 8)
    return bytes(changed)


@settings(max_examples=60, deadline=None)
@given(part=st.sampled_from(["leaf", "path", "length", "nonce"]), bit=st.integers(0, 10**6))
def test_any_damaged_proof_is_a_wrong_proof_with_its_digest_kept(part, bit):
    mesh = Mesh(holders=1, per_holder=1)
    audits, challenge = one_challenge(mesh)
    good = mesh.proof(challenge)
    changes = {
        "leaf": {"leaf": flip(good.leaf, bit)},
        "path": {"path": (flip(good.path[0], bit), *good.path[1:])},
        "length": {"length": good.length ^ (1 << bit % 20)},
        "nonce": {"nonce": good.nonce ^ (1 << bit % 64)},
    }
    bad = dataclasses.replace(good, **changes[part])
    evidence = audits.answered(challenge, bad, None, challenge.sent_at + 1)
    assert evidence.verdict is AuditVerdict.WRONG_PROOF
    assert evidence.answer_digest is not None and evidence.answered_at == challenge.sent_at + 1
    assert audits.results(challenge.holder).failed == 1


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (("FragmentNotFound", "not here"), AuditVerdict.MISSING),
        (("IntegrityError", "my copy rotted"), AuditVerdict.MISSING),
        (("busy", "too many requests"), AuditVerdict.REFUSED),
        (("NodeStopping", "bye"), AuditVerdict.REFUSED),
        (None, AuditVerdict.LATE),
    ],
)
def test_anything_but_a_proof_fails(error, verdict):
    mesh = Mesh(holders=1, per_holder=1)
    audits, challenge = one_challenge(mesh)
    evidence = audits.answered(challenge, None, error, challenge.sent_at + 1)
    assert evidence.verdict is verdict and verdict.failed
    fields = evidence.log_fields()
    assert fields["verdict"] == verdict.value and fields["holder"] == challenge.holder.hex()
    assert (fields["answer_sha256"] is None) == (error is None)


def test_a_good_proof_passes_but_not_after_the_deadline():
    mesh = Mesh(holders=1, per_holder=1)
    audits, challenge = one_challenge(mesh)
    evidence = audits.answered(challenge, mesh.proof(challenge), None, challenge.deadline)
    assert evidence.verdict is AuditVerdict.PASSED and not evidence.verdict.failed
    audits, challenge = one_challenge(mesh)
    late = audits.answered(challenge, mesh.proof(challenge), None, challenge.deadline + 0.5)
    assert late.verdict is AuditVerdict.LATE and "0.5 s after" in late.reason
    assert audits.expire(challenge.deadline + 1) == []  # judged already


def test_silence_is_judged_late_at_the_deadline_and_the_next_challenge_follows():
    mesh = Mesh(holders=1, per_holder=1)
    audits, challenge = one_challenge(mesh)
    assert audits.next_deadline() == challenge.deadline
    assert audits.due(challenge.deadline) == []  # one outstanding per holder
    (evidence,) = audits.expire(challenge.deadline)
    assert evidence.verdict is AuditVerdict.LATE and evidence.answered_at is None
    assert audits.next_deadline() is not None


def test_a_holder_that_kept_a_share_of_its_fragments_passes_about_that_share():
    mesh = Mesh(holders=1, per_holder=40, size=2 * LEAF)
    kept = {w.fragment_id for w in mesh.watched[:10]}  # a quarter

    def liar(challenge):
        if challenge.fragment_id in kept:
            return mesh.proof(challenge), None
        return AuditProofReply(challenge.nonce, bytes(LEAF), (bytes(32),), 2 * LEAF), None

    audits = planner(AuditSettings(min_per_holder_per_hour=60), seed=11)
    audits.watch(mesh.watched, 0.0)
    evidence = run(audits, 2000 / 60 * HOUR, liar)
    passed = sum(not e.verdict.failed for e in evidence) / len(evidence)
    assert 0.2 < passed < 0.3
    results = audits.results(holder(0))
    assert results.passed + results.failed == len(evidence)


@pytest.mark.parametrize(
    "changes",
    [{"fraction_per_day": -1}, {"min_per_holder_per_hour": math.nan}, {"answer_timeout": 0}],
)
def test_settings_are_validated(changes):
    with pytest.raises(ValueError, match="audit"):
        AuditSettings(**changes)


# --- what the steward tells the planner ------------------------------------------------------


def test_a_dropped_fragment_is_never_challenged_again_and_a_dropped_holder_not_at_all():
    mesh = Mesh(holders=2, per_holder=3)
    audits = planner(AuditSettings(min_per_holder_per_hour=60), seed=2)
    audits.watch(mesh.watched, 0.0)
    gone = mesh.watched[0]
    audits.drop(gone.holder, gone.fragment_id)
    assert audits.watched(gone.holder) == 2
    evidence = run(audits, 50 * HOUR, lambda c: (mesh.proof(c), None))
    assert len(evidence) > 1000
    assert gone.fragment_id not in {e.challenge.fragment_id for e in evidence}
    audits.drop(holder(1))
    assert audits.watched(holder(1)) == 0
    later = run(audits, 100 * HOUR, lambda c: (mesh.proof(c), None))
    assert later and {e.challenge.holder for e in later} == {holder(0)}
    audits.drop(holder(0))
    assert audits.next_deadline() is None
    audits.drop(holder(9))  # unknown: nothing to do


def test_a_dropped_holder_still_has_its_outstanding_challenge_judged():
    mesh = Mesh(holders=1, per_holder=1)
    audits, challenge = one_challenge(mesh)
    audits.drop(challenge.holder)
    assert audits.outstanding() == [challenge] and audits.due(challenge.deadline + 1) == []
    evidence = audits.answered(challenge, mesh.proof(challenge), None, challenge.sent_at + 1)
    assert evidence is not None and evidence.verdict is AuditVerdict.PASSED
    assert audits.outstanding() == [] and audits.next_deadline() is None


def test_hasten_makes_the_next_challenge_due_now_once():
    mesh = Mesh(holders=2, per_holder=2)
    audits = planner(AuditSettings(min_per_holder_per_hour=1), seed=4)  # an hour apart
    audits.watch(mesh.watched, 0.0)
    audits.hasten(holder(1), 5.0)
    assert audits.next_deadline() == 5.0
    (challenge,) = audits.due(5.0)
    assert challenge.holder == holder(1) and challenge.sent_at == 5.0
    audits.hasten(holder(1), 6.0)  # outstanding: the next one is due at 6 but waits its turn
    assert audits.due(6.0) == []
    audits.answered(challenge, mesh.proof(challenge), None, 7.0)
    assert [c.holder for c in audits.due(7.0)] == [holder(1)]
    audits.hasten(holder(9), 1.0)  # unknown: nothing to do


def test_due_with_a_limit_sends_the_longest_due_first_and_keeps_the_rest_due():
    mesh = Mesh(holders=5, per_holder=1)
    audits = planner(AuditSettings(min_per_holder_per_hour=60), seed=6)
    audits.watch(mesh.watched, 0.0)
    order = sorted(range(5), key=lambda h: audits._holders[holder(h)].due_at)
    now = 10 * HOUR
    first = audits.due(now, limit=2)
    assert sorted(c.holder for c in first) == sorted(holder(h) for h in order[:2])
    assert audits.due(now, limit=0) == []
    rest = audits.due(now)
    assert sorted(c.holder for c in rest) == sorted(holder(h) for h in order[2:])


def test_a_total_liar_walked_with_hasten_and_drop_loses_every_fragment_in_as_many_answers():
    """What the steward does with a failure (drop the fragment, hasten the holder): a holder
    that kept nothing fails once per fragment, back to back, then has nothing left watched."""
    mesh = Mesh(holders=1, per_holder=50, size=2 * LEAF)
    audits = planner(AuditSettings(), seed=8)  # default rate: one audit per 15 minutes
    audits.watch(mesh.watched, 0.0)
    now = first = audits.next_deadline()
    failed = []
    while (wake := audits.next_deadline()) is not None:
        now = max(now, wake)
        for challenge in audits.due(now):
            garbage = AuditProofReply(challenge.nonce, bytes(LEAF), (bytes(32),), 2 * LEAF)
            evidence = audits.answered(challenge, garbage, None, now + 0.05)
            assert evidence is not None and evidence.verdict is AuditVerdict.WRONG_PROOF
            failed.append(challenge.fragment_id)
            audits.drop(challenge.holder, challenge.fragment_id)
            audits.hasten(challenge.holder, now + 0.05)
        now += 0.05
    assert sorted(failed) == sorted(w.fragment_id for w in mesh.watched)
    assert now - first < 50 * 0.05 + 1  # after the first failure, 50 answers back to back


def test_counts_are_kept_for_a_bounded_number_of_holders(monkeypatch):
    monkeypatch.setattr("p2pstore.core.audit.MAX_HOLDERS_REMEMBERED", 3)
    mesh = Mesh(holders=5, per_holder=1)
    audits = planner(AuditSettings(min_per_holder_per_hour=60), seed=3)
    audits.watch(mesh.watched, 0.0)
    run(audits, 3 * HOUR, lambda c: (mesh.proof(c), None))
    assert len(audits.audited()) == 3
    assert all(c.passed and not c.failed for c in audits.audited().values())


def test_a_withdrawn_challenge_gets_no_verdict_and_only_an_outstanding_one_is_withdrawn():
    mesh = Mesh(holders=1, per_holder=1)
    audits, challenge = one_challenge(mesh)
    assert audits.withdraw(challenge) and not audits.withdraw(challenge)
    assert audits.outstanding() == [] and audits.results(challenge.holder).failed == 0
    assert audits.answered(challenge, None, None, challenge.deadline) is None
    assert audits.expire(challenge.deadline + 1) == []
    assert audits.next_deadline() is not None  # still watched: the next one follows
    audits.drop(challenge.holder)
    audits, challenge = one_challenge(mesh)
    audits.drop(challenge.holder)
    assert audits.withdraw(challenge) and audits.next_deadline() is None


def test_the_time_to_catch_a_liar_as_simulations_readme_states_it():
    config = AuditSettings()
    assert 1 / config.rate(1) == 900.0  # 15 minutes at the floor
    assert math.log(100) / config.rate(1) / 60 == pytest.approx(69, abs=0.5)
    assert config.rate(4800) == pytest.approx(config.rate(1))  # the floor rules up to 4,800
    assert config.rate(4801) > config.rate(1)
    assert 1 / (config.rate(1) * (1 - 0.9)) / HOUR == pytest.approx(2.5)
    assert 100 / config.rate(100) / HOUR == pytest.approx(25)
    assert 10_000 / config.rate(10_000) / DAY == pytest.approx(50)
