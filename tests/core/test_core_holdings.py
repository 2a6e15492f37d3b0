"""Placement as the union of receipts: a CRDT no forged record can take anything away from.

A pool of genuine receipts (honest holders, any statement, any age) and of forgeries (no
certificate, another node's certificate, a revoked, expired, foreign or client certificate,
another object, a changed field, junk and old-format records) is made once; hypothesis then
draws which of them go into which placement records, in which order, how often.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from datetime import UTC, datetime, timedelta

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.holders import MAX_RECEIPTS_PER_HOLDER, PLACEMENT_FORMAT, Holdings
from p2pstore.core.placement_view import LocalEvidence, Placement
from p2pstore.core.receipts import Receipt, sign_receipt
from p2pstore.errors import LocalProtocolError
from p2pstore.identity import MeshCA, Role

T0 = 1_772_366_400.0
DAY = 86400.0
ISSUED = datetime.fromtimestamp(T0, UTC) - timedelta(days=30)
CA = MeshCA.create_in_memory(mesh_name="holdings", now=ISSUED)
OTHER_CA = MeshCA.create_in_memory(mesh_name="elsewhere", now=ISSUED)
HONEST = [CA.issue_in_memory(datacenter=f"dc-{i}", region="FR-GES", now=ISSUED) for i in range(4)]
ATTACKER = CA.issue_in_memory(datacenter="dc-evil", region="FR-GES", now=ISSUED)
REVOKED = CA.issue_in_memory(datacenter="dc-r", region="FR-GES", now=ISSUED)
CLIENT = CA.issue_in_memory(datacenter="office", region="FR-GES", now=ISSUED, role=Role.CLIENT)
LAPSED = CA.issue_in_memory(datacenter="dc-l", region="FR-GES", now=ISSUED, valid_days=2)
FOREIGN = OTHER_CA.issue_in_memory(datacenter="dc-f", region="FR-GES", now=ISSUED)
THROWAWAY = Ed25519PrivateKey.from_private_bytes(b"\x42" * 32)
CA.revoke_in_memory(REVOKED.identity.serial, now=ISSUED + timedelta(days=1))
TRUST = CA.trust_anchor()

N, CHUNKS = 4, 3
POSITIONS = N * CHUNKS
OBJECT = hashlib.sha256(b"the object").digest()
IDS = [[hashlib.sha256(b"%d/%d" % (c, s)).digest() for s in range(N)] for c in range(CHUNKS)]
FLAT = [fragment_id for row in IDS for fragment_id in row]
OTHER_OBJECT = hashlib.sha256(b"another object").digest()

Item = tuple[Receipt, bytes]
"""A receipt and the certificate a container carries beside it."""


def receipt(signer, held=(), missing=(), *, now=T0, object_id=OBJECT, address="h:1", ttl=None):
    extra = {} if ttl is None else {"ttl": ttl}
    return sign_receipt(
        signer,
        object_id,
        address=address,
        held={p: FLAT[p] for p in held},
        missing={p: FLAT[p] for p in missing},
        now=now,
        **extra,
    )


def statement(rng: random.Random, signer, *, object_id=OBJECT) -> Receipt:
    positions = rng.sample(range(POSITIONS), rng.randint(1, 5))
    split = rng.randint(0, len(positions))
    age = rng.choice([0.0, 60.0, 0.5 * DAY, 2 * DAY, 4 * DAY])  # 4 days: expired
    return receipt(
        signer,
        sorted(positions[:split]),
        sorted(positions[split:]),
        now=T0 - age - rng.random() * 10,
        object_id=object_id,
        address=f"h{rng.randint(0, 2)}:1",
    )


def der(credentials) -> bytes:
    return credentials.certificate_der()


def make_pool(seed: int = 7) -> tuple[list[Item], list[Item | bytes]]:
    rng = random.Random(seed)
    honest: list[Item] = []
    for _ in range(40):
        holder = rng.choice(HONEST)
        honest.append((statement(rng, holder), der(holder)))
    forged: list[Item | bytes] = []
    for _ in range(6):
        victim = rng.choice(HONEST)
        # no certificate at all / an honest node's certificate beside a throw-away signature
        fake = statement(rng, THROWAWAY)
        forged.append((fake, b""))
        forged.append((fake, der(victim)))
        # an honest holder's receipt with a field changed (its signature no longer matches)
        genuine = statement(rng, victim)
        forged.append((dataclasses.replace(genuine, held=b"", missing=b"\x00\x00"), der(victim)))
        # the throw-away key claiming to be the victim
        forged.append((dataclasses.replace(fake, holder=victim.node_id), der(victim)))
        # genuine signatures that must not count: revoked, lapsed, foreign, client
        for signer in (REVOKED, LAPSED, FOREIGN, CLIENT):
            forged.append((statement(rng, signer), der(signer)))
        # an honest holder's genuine receipt for another object
        forged.append((statement(rng, victim, object_id=OTHER_OBJECT), der(victim)))
    forged += [
        b"junk",
        msgpack.packb([1, OBJECT, N, [], b"\xff\xff" * POSITIONS]),
        msgpack.packb([PLACEMENT_FORMAT, OTHER_OBJECT, N, [], []]),
        msgpack.packb([PLACEMENT_FORMAT, OBJECT, N, [b"not a certificate"], [b"nor a receipt"]]),
    ]
    return honest, forged


HONEST_POOL, FORGED_POOL = make_pool()


def container(items: list[Item | bytes]) -> list[bytes]:
    """Placement record values carrying ``items`` as they are (a forger's record: nothing
    filtered); raw values pass through."""
    values = [item for item in items if isinstance(item, bytes)]
    pairs = [item for item in items if not isinstance(item, bytes)]
    certificates = sorted({c for _, c in pairs if c})
    values.append(
        msgpack.packb(
            [PLACEMENT_FORMAT, OBJECT, N, certificates, [r.encode() for r, _ in pairs]],
            use_bin_type=True,
        )
    )
    return values


def fresh() -> Holdings:
    return Holdings(OBJECT, IDS)


def holdings_of(values: list[bytes]) -> Holdings:
    holdings = fresh()
    for value in values:
        holdings.add_container(value)
    return holdings


def view(holdings: Holdings, now: float = T0) -> Placement:
    return holdings.view(now, TRUST)


def holder_sets(placement: Placement) -> list[set[bytes]]:
    return [
        {h.node_id for h in placement.holders_of(c, s)} for c in range(CHUNKS) for s in range(N)
    ]


def test_every_forgery_alone_counts_for_nothing():
    """The pool's forgeries really are refused (else the properties below prove little): each
    alone leaves no holder, and the genuine receipts of the pool do count."""
    for item in FORGED_POOL:
        assert not any(holder_sets(view(holdings_of(container([item])))))
    assert any(holder_sets(view(holdings_of(container(list(HONEST_POOL))))))


subsets = st.lists(st.integers(0, len(HONEST_POOL) - 1), max_size=25)
forgeries = st.lists(st.integers(0, len(FORGED_POOL) - 1), max_size=25)


@settings(max_examples=150, deadline=None)
@given(subsets, forgeries, st.randoms(use_true_random=False), st.integers(1, 5))
def test_forged_records_change_no_view(chosen, forged, rng, records):
    """However forgeries are mixed into however many records, in whatever order, the view is
    the honest receipts' view."""
    honest = [HONEST_POOL[i] for i in chosen]
    items: list[Item | bytes] = [*honest, *(FORGED_POOL[i] for i in forged)]
    rng.shuffle(items)
    values = [v for k in range(records) for v in container(items[k::records])]
    assert view(holdings_of(values)) == view(holdings_of(container(list(honest))))


@settings(max_examples=100, deadline=None)
@given(subsets, st.lists(st.tuples(st.booleans(), st.integers(0, POSITIONS - 1)), max_size=8))
def test_a_member_with_a_certificate_only_adds_itself(chosen, claims):
    """A certified attacker signing whatever it likes (held, missing, any position) never
    removes or hides an honest holder; at most it appears beside them."""
    honest = [HONEST_POOL[i] for i in chosen]
    attacker = [
        (receipt(ATTACKER, [p] if held else [], [] if held else [p], now=T0 + 10), der(ATTACKER))
        for held, p in claims
    ]
    before = holder_sets(view(holdings_of(container(list(honest)))))
    after = holder_sets(view(holdings_of(container([*honest, *attacker]))))
    for was, now in zip(before, after, strict=True):
        assert was <= now
        assert now - was <= {ATTACKER.node_id}


@settings(max_examples=100, deadline=None)
@given(st.lists(subsets, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_merging_is_a_crdt(groups, rng):
    """Order, grouping and repetition of merges do not matter, and the result is the view of
    the union of every receipt."""
    parts = []
    for group in groups:
        part = holdings_of(container([HONEST_POOL[i] for i in group]))
        parts.append(part)
    union = holdings_of(container([HONEST_POOL[i] for group in groups for i in group]))
    orders = [parts, list(reversed(parts)), rng.sample(parts, len(parts)), parts + parts]
    for order in orders:
        merged = fresh()
        for part in order:
            merged.merge(part)
            merged.merge(part)
        assert view(merged) == view(union)
    # associativity: (a + b) + c == a + (b + c)
    if len(parts) >= 3:
        left, right = fresh(), fresh()
        left.merge(parts[0])
        left.merge(parts[1])
        left.merge(parts[2])
        tail = fresh()
        tail.merge(parts[1])
        tail.merge(parts[2])
        right.merge(parts[0])
        right.merge(tail)
        assert view(left) == view(right)


@settings(max_examples=60, deadline=None)
@given(subsets, st.floats(0, 4 * DAY))
def test_pruning_changes_no_view_from_then_on(chosen, later):
    holdings = holdings_of(container([HONEST_POOL[i] for i in chosen]))
    before = [view(holdings, T0), view(holdings, T0 + later)]
    holdings.prune(T0)
    assert [view(holdings, T0), view(holdings, T0 + later)] == before


@settings(max_examples=60, deadline=None)
@given(subsets, forgeries)
def test_a_built_record_carries_the_view(chosen, forged):
    """What a steward publishes reads back as the view it verified (forgeries not relayed)."""
    items = [*(HONEST_POOL[i] for i in chosen), *(FORGED_POOL[i] for i in forged)]
    holdings = holdings_of(container(items))
    published = holdings.encode(T0, TRUST)
    again = holdings_of([published])
    assert view(again) == view(holdings)
    assert len(again) <= len(holdings)


def test_the_latest_statement_of_a_holder_wins():
    holder = HONEST[0]
    holdings = fresh()
    held = receipt(holder, [0, 1], now=T0 - 100)
    holdings.add(held, der(holder))
    assert holder_sets(view(holdings))[:2] == [{holder.node_id}, {holder.node_id}]
    holdings.add(receipt(holder, [], [1], now=T0 - 50), der(holder))  # "I lost share 1"
    assert holder_sets(view(holdings))[:2] == [{holder.node_id}, set()]
    assert view(holdings).chunks[0][1] is None
    assert holdings.gone(T0, TRUST).chunks[0][1].node_id == holder.node_id
    holdings.add(held, der(holder))  # an old receipt replayed changes nothing
    assert holder_sets(view(holdings))[1] == set()
    holdings.add(receipt(holder, [1], now=T0 - 10), der(holder))  # stored again
    assert holder_sets(view(holdings))[1] == {holder.node_id}


def test_missing_beats_held_at_the_same_instant():
    holder = HONEST[1]
    holdings = fresh()
    holdings.add(receipt(holder, [3], now=T0), der(holder))
    holdings.add(receipt(holder, [], [3], now=T0), der(holder))
    assert holder_sets(view(holdings))[3] == set()


def test_receipts_lapse_and_future_ones_wait():
    holder = HONEST[2]
    holdings = fresh()
    holdings.add(receipt(holder, [4], now=T0), der(holder))
    assert holder_sets(view(holdings, T0 + 3 * DAY - 1))[4] == {holder.node_id}
    assert holder_sets(view(holdings, T0 + 3 * DAY))[4] == set()
    early = fresh()
    early.add(receipt(holder, [4], now=T0 + 3600), der(holder))  # a clock an hour ahead
    assert holder_sets(view(early))[4] == set()
    assert holder_sets(view(early, T0 + 3600))[4] == {holder.node_id}


def test_revoking_a_holder_removes_all_its_receipts():
    ca = MeshCA.create_in_memory(mesh_name="revocation", now=ISSUED)
    holder = ca.issue_in_memory(datacenter="dc-1", region="FR-GES", now=ISSUED)
    holdings = fresh()
    holdings.add(receipt(holder, range(POSITIONS), now=T0), der(holder))
    assert all(holder_sets(holdings.view(T0, ca.trust_anchor())))
    ca.revoke_in_memory(holder.identity.serial, now=ISSUED + timedelta(days=2))
    assert not any(holder_sets(holdings.view(T0, ca.trust_anchor())))
    relayed = holdings_of([holdings.encode(T0, ca.trust_anchor())])
    assert not len(relayed)


def test_local_evidence_excludes_a_holder_or_one_fragment():
    a, b = HONEST[0], HONEST[1]
    holdings = fresh()
    holdings.add(receipt(a, [0, 1]), der(a))
    holdings.add(receipt(b, [0]), der(b))
    evidence = LocalEvidence()
    assert evidence.exclusion(OBJECT) is None
    evidence.fragments[(a.node_id, OBJECT, 1)] = "audit failed"
    placement = holdings.view(T0, TRUST, exclude=evidence.exclusion(OBJECT))
    assert holder_sets(placement)[:2] == [{a.node_id, b.node_id}, set()]
    evidence.holders[b.node_id] = "lied"
    placement = holdings.view(T0, TRUST, exclude=evidence.exclusion(OBJECT))
    assert holder_sets(placement)[:2] == [{a.node_id}, set()]
    # A relay cannot cut a signed receipt: it relays one while it counts any of its fragments,
    # and none at all once it counts none of them.
    relayed = holdings_of([holdings.encode(T0, TRUST, exclude=evidence.exclusion(OBJECT))])
    assert holder_sets(view(relayed))[:2] == [{a.node_id}, {a.node_id}]
    evidence.holders[a.node_id] = "lied too"
    assert not len(holdings_of([holdings.encode(T0, TRUST, exclude=evidence.exclusion(OBJECT))]))


def test_a_holder_is_placed_where_its_certificate_says_and_dialled_where_it_said_last():
    holder = HONEST[3]
    holdings = fresh()
    holdings.add(receipt(holder, [0], now=T0 - 100, address="old:1"), der(holder))
    holdings.add(receipt(holder, [5], now=T0 - 10, address="new:1"), der(holder))
    placement = view(holdings)
    assert placement.chunks[0][0] == placement.chunks[1][1]
    found = placement.chunks[0][0]
    assert (found.address, found.datacenter, found.region) == ("new:1", "dc-3", "FR-GES")


def test_a_share_with_several_holders_lists_the_freshest_first():
    a, b = HONEST[0], HONEST[1]
    holdings = fresh()
    holdings.add(receipt(a, [2], now=T0 - 100), der(a))
    holdings.add(receipt(b, [2], now=T0 - 10), der(b))
    placement = view(holdings)
    assert [h.node_id for h in placement.holders_of(0, 2)] == [b.node_id, a.node_id]
    assert {h.node_id for h in placement.holders()} == {a.node_id, b.node_id}


def test_statements_say_how_fresh_a_receipt_is():
    holder = HONEST[0]
    holdings = fresh()
    holdings.add(receipt(holder, [0], now=T0 - 2 * DAY), der(holder))
    (said,) = holdings.statements(T0, TRUST).values()
    assert said.held and not said.fresh(T0) and said.fresh(T0 - DAY)


def test_an_old_format_record_is_ignored_with_what_to_do():
    problems = fresh().add_container(msgpack.packb([1, OBJECT, N, [], b""]))
    assert len(problems) == 1 and "put the object again" in problems[0]


def test_a_holder_flooding_receipts_is_bounded_in_what_a_relay_carries():
    holder = HONEST[0]
    holdings = fresh()
    for position in range(POSITIONS):
        holdings.add(receipt(holder, [position], now=T0 - position), der(holder))
    relayed = holdings_of([holdings.encode(T0, TRUST, max_per_holder=5)])
    assert len(relayed) == 5
    # A reader checks at most MAX_RECEIPTS_PER_HOLDER receipts of one holder in one record.
    flood = [
        (receipt(holder, [p % POSITIONS], now=T0 - p), der(holder))
        for p in range(MAX_RECEIPTS_PER_HOLDER + 6)
    ]
    read = fresh()
    (value,) = container(flood)
    problems = read.add_container(value)
    assert len(read) == MAX_RECEIPTS_PER_HOLDER and len(problems) == 6
    assert read.add_container(value) == []  # the same record again: nothing to check
    with pytest.raises(LocalProtocolError, match="n=4"):
        Holdings(OBJECT, [IDS[0], IDS[1][:3]])
