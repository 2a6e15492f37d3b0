"""Garbage collection as a property: over random sequences of puts, overwrites, deletes, a
stolen key's erasures and shortened retention, repairs, steward crashes and outages, and
bucket replicas (a minority of them hostile, hiding any entry; honest ones sometimes out of
reach), a holder never frees a fragment of an object that a reference still keeps on the whole
truth: a live version, or one under retention.

The model drives the pure rules the nodes use: ``core.reference_evidence`` (the steward's
verdict, its remembered retention), ``core.references`` (retention proofs a holder checks) and
``core.leases`` (a holder's lease, retention and sweep)."""

from __future__ import annotations

import dataclasses
import hashlib
import random

from bucket_fixtures import ALICE, BUCKET_TOKEN, T0, TRUST, token, verified
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.bucket_entries import Op, sign_entry
from p2pstore.core.bucket_index import BucketIndex
from p2pstore.core.leases import DAY, LEASE_TTL, Fate, FragmentLife, Retention, decide
from p2pstore.core.reference_evidence import Shown, assess, combine
from p2pstore.core.references import judge, retention_shown, sign_reference
from p2pstore.wire import RetentionProof

OBJECTS = [hashlib.sha256(b"object %d" % i).digest() for i in range(3)]
NAMES = ["a", "b", "c"]
GRACE = 2 * DAY
REPLICAS = 5

ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(NAMES), st.integers(0, len(OBJECTS) - 1)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("attack"), st.sampled_from(NAMES)),
    st.tuples(st.just("days"), st.integers(1, 6)),
    st.tuples(st.just("repair"), st.integers(0, len(OBJECTS) - 1)),
    st.tuples(st.just("crash")),
    st.tuples(st.just("outage"), st.integers(1, 2)),
    st.tuples(st.just("half_put"), st.sampled_from(NAMES), st.integers(0, len(OBJECTS) - 1)),
)


@dataclasses.dataclass
class Held:
    life: FragmentLife


class World:
    def __init__(self, versioning: bool, retention_days: int, hostile: int, rng: random.Random):
        self.now = float(T0)
        self.versioning = versioning
        self.retention_days = retention_days
        self.hostile = hostile
        self.rng = rng
        self.entries = []  # verified entries, the whole truth
        self.references = []  # (reference, put entry or None if never pushed)
        self.memory: dict[bytes, Retention] = {}  # the steward's remembered retention
        self.held: dict[bytes, Held] = {}
        self.freed = 0
        self.seq = 0

    def sign(self, op: Op, name: str, **fields):
        self.seq += 1
        payload = b"sealed %d" % self.seq if op in (Op.PUT, Op.MARKER) else b""
        stamp = int(self.now * 1000) + self.seq
        return sign_entry(
            ALICE, bucket_token=BUCKET_TOKEN, name=token(name), op=op, timestamp=stamp,
            payload=payload, **fields,
        )  # fmt: skip

    def push(self, entry) -> None:
        self.entries.append(verified(entry, self.now + 1))

    def versions(self, name: str):
        index = BucketIndex(self.entries[0].bucket) if self.entries else None
        if index is None:
            return []
        for e in self.entries:
            index.add(e)
        return index.versions(token(name), self.now)

    def put(self, name: str, obj: int, *, complete: bool = True) -> None:
        object_id = OBJECTS[obj]
        retain = int(self.now) + self.retention_days * DAY if self.retention_days else 0
        entry = self.sign(Op.PUT, name, retain_until=retain)
        reference = sign_reference(ALICE, object_id, now=self.now, bucket_token=BUCKET_TOKEN,
                                   name=entry.name, version=entry.version)  # fmt: skip
        held = self.held.get(object_id)
        if held is None:  # the fragment is stored, with the initial lease of a finished put
            life = FragmentLife(self.now, self.now + LEASE_TTL)
        else:  # stored again: a convergent put of bytes held
            life = dataclasses.replace(held.life, stored_at=self.now)
        self.held[object_id] = Held(life)
        self.references.append(reference)  # published before the PUT
        if not complete:
            return
        older = [v for v in self.versions(name)]
        self.push(entry)
        if not self.versioning:
            self.erase(name, older)

    def erase(self, name: str, views) -> None:
        for view in views:
            self.push(self.sign(Op.ERASE, name, version=view.version))

    def delete(self, name: str) -> None:
        older = self.versions(name)
        self.push(self.sign(Op.MARKER, name))
        if not self.versioning:
            self.erase(name, older)

    def attack(self, name: str) -> None:
        for view in self.versions(name):
            self.push(self.sign(Op.ERASE, name, version=view.version))
            self.push(self.sign(Op.RETAIN, name, version=view.version, retain_until=int(self.now)))

    def shown(self) -> Shown:
        """What the bucket's replicas show this round: hostile ones any subset, honest ones
        everything, some of them out of reach."""
        answering = [self.rng.random() < 0.7 for _ in range(REPLICAS - self.hostile)]
        union = set()
        for _ in range(self.hostile):
            union |= {i for i in range(len(self.entries)) if self.rng.random() < 0.5}
        if any(answering):
            union = set(range(len(self.entries)))
        answered = self.hostile + sum(answering)
        return Shown(tuple(self.entries[i] for i in sorted(union)), answered, REPLICAS)

    def steward_round(self) -> None:
        shown = self.shown()
        for object_id, held in self.held.items():
            assessments, proofs = [], []
            for reference in self.references:
                if reference.object_id != object_id:
                    continue
                digest = reference.signature
                one = assess(reference, shown, self.now, known=self.memory.get(digest))
                self.memory[digest] = one.retention
                assessments.append(one)
                proofs += [RetentionProof(reference=reference, entry=e) for e in one.proof_entries]
            verdict = combine(assessments)
            if verdict is None or not verdict.live:
                continue
            life = held.life
            retention = life.retention
            for proof in proofs:  # the holder checks the tenant's words itself
                _, shown_retention = retention_shown(proof, self.now, trust=TRUST)
                retention = retention.extended(shown_retention)
            until = max(life.leased_until or 0.0, self.now + LEASE_TTL)
            held.life = dataclasses.replace(life, leased_until=until, retention=retention)

    def kept_by_truth(self, object_id: bytes) -> bool:
        return any(
            judge(r, self.entries, self.now).live
            for r in self.references
            if r.object_id == object_id
        )

    def sweep(self) -> None:
        for object_id, held in list(self.held.items()):
            if decide(held.life, self.now, grace=GRACE, up_since=T0) is Fate.FREE:
                assert not self.kept_by_truth(object_id), "freed an object a reference keeps"
                del self.held[object_id]
                self.freed += 1

    def days(self, count: int, *, stewards: bool = True) -> None:
        for _ in range(count):
            self.now += DAY
            if stewards:
                self.steward_round()
            self.sweep()


@settings(max_examples=120, deadline=None)
@given(
    steps=st.lists(ops, max_size=14),
    versioning=st.booleans(),
    retention_days=st.sampled_from([0, 0, 5, 20]),
    hostile=st.integers(0, 2),
    seed=st.integers(0, 2**32),
)
def test_nothing_referenced_or_retained_is_ever_freed(
    steps, versioning, retention_days, hostile, seed
):
    world = World(versioning, retention_days, hostile, random.Random(seed))
    for step in steps:
        match step:
            case ("put", name, obj):
                world.put(name, obj)
            case ("half_put", name, obj):
                world.put(name, obj, complete=False)
            case ("delete", name):
                world.delete(name)
            case ("attack", name):
                world.attack(name)
            case ("days", count):
                world.days(count)
            case ("repair", obj):
                held = world.held.get(OBJECTS[obj])
                if held is not None:  # rebuilt on a new holder: no retention known there yet
                    world.held[OBJECTS[obj]] = Held(FragmentLife(world.now, world.now + LEASE_TTL))
            case ("crash",):
                world.memory.clear()
            case ("outage", count):
                world.days(count, stewards=False)
    world.days(40)  # then everything settles: what nothing keeps is freed
    for object_id in list(world.held):
        assert world.kept_by_truth(object_id), "garbage outlived the grace"
