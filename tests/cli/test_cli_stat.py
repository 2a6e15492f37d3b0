"""``p2pstore stat``'s verdicts: per chunk the live fragments against k, the repair threshold of
the manifest's rule (as the client's config declares it) and n."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from p2pstore.cli.object_status import (
    chunk_state,
    health,
    live_text,
    stat_summary,
    status_table,
)
from p2pstore.codec import Manifest
from p2pstore.codec.manifest import ChunkEntry
from p2pstore.core.placement import Candidate
from p2pstore.core.placement_view import Placement, Statement, placement_of
from p2pstore.core.rules import SHIPPED_RULES, CodingRule
from p2pstore.net.status import ObjectStatus

CHUNK = 4096
DAY = 86400.0


def make_status(
    live_per_chunk: list[int], *, rule: str = "standard", k: int = 4, n: int = 8
) -> ObjectStatus:
    """An object of ``len(live_per_chunk)`` chunks coded k-of-n whose first ``live`` shares
    answer present, the next one missing and the rest silent."""
    count = len(live_per_chunk)
    entries = []
    for index in range(count):
        length = CHUNK + 16
        ids = tuple(hashlib.sha256(f"{index}/{s}".encode()).digest() for s in range(n))
        entries.append(ChunkEntry(length, -(-length // k), ids))
    manifest = Manifest(count * CHUNK, CHUNK, "aes-256-gcm", rule, k, n, tuple(entries))
    holders = [
        Candidate(hashlib.sha1(b"%d" % s).digest(), f"10.0.0.{s}:7400", f"dc-{s}", "FR-GES")
        for s in range(n)
    ]
    present = tuple(
        tuple(True if s < live else (False if s == live else None) for s in range(n))
        for live in live_per_chunk
    )
    placement = placement_of(b"\x01" * 32, n, [holders] * count)
    return ObjectStatus(manifest, placement, present)


def rendered(status: ObjectStatus, rules=SHIPPED_RULES) -> str:
    console = Console(width=400, record=True, color_system=None)
    console.print(status_table(status, rules))
    return console.export_text()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))), st.data())
def test_the_verdict_follows_k_and_the_threshold(kn, data):
    k, n = kn
    threshold = data.draw(st.integers(k, n))
    live = data.draw(st.integers(0, n))
    state = chunk_state(live, k, n, threshold)
    if live >= threshold:
        assert state == "healthy"
    elif live >= k:
        assert state == "degraded"
    else:
        assert state == "unreadable"
    # Without a known threshold only n live fragments are healthy.
    assert chunk_state(live, k, n, None) == (
        "healthy" if live == n else ("degraded" if live >= k else "unreadable")
    )


def test_each_chunk_is_judged_against_the_rule_of_the_manifest():
    status = make_status([8, 6, 5, 3])  # standard: 4-of-8, repair below 6
    summary = stat_summary(status, SHIPPED_RULES)
    assert [c["live"] for c in summary["chunks"]] == [8, 6, 5, 3]
    assert [c["state"] for c in summary["chunks"]] == [
        "healthy", "healthy", "degraded", "unreadable",
    ]  # fmt: skip
    assert {(c["k"], c["repair_threshold"], c["n"]) for c in summary["chunks"]} == {(4, 6, 8)}
    assert summary["state"] == "unreadable"  # the worst chunk's
    assert (summary["repair_threshold"], summary["grace_period"]) == (6, 3600.0)
    assert summary["rule_known"] and summary["rule_problem"] is None


@pytest.mark.parametrize(
    ("lives", "state"), [([8, 7], "healthy"), ([8, 6], "healthy"), ([8, 5], "degraded")]
)
def test_the_object_is_as_healthy_as_its_worst_chunk(lives, state):
    assert health(make_status(lives), SHIPPED_RULES) == state


def test_a_declared_rule_sets_the_threshold():
    strict = {"gov": CodingRule("gov", k=4, n=8, repair_threshold=8)}
    status = make_status([7], rule="gov")
    assert stat_summary(status, strict)["chunks"][0]["state"] == "degraded"
    lax = {"gov": CodingRule("gov", k=4, n=8, repair_threshold=4)}
    assert stat_summary(status, lax)["chunks"][0]["state"] == "healthy"
    assert "7/8 live (k=4, repair below 8)" in rendered(status, strict)


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        (SHIPPED_RULES, "unknown to this client"),
        ({"gov": CodingRule("gov", k=6, n=14, repair_threshold=9)}, "is 6-of-14 in this client"),
    ],
)
def test_a_rule_unknown_here_shows_k_and_n_and_says_so(rules, problem):
    status = make_status([8, 7], rule="gov")
    summary = stat_summary(status, rules)
    assert summary["rule_known"] is False
    assert problem in summary["rule_problem"]
    assert summary["repair_threshold"] is None
    assert [c["state"] for c in summary["chunks"]] == ["healthy", "degraded"]
    text = rendered(status, rules)
    assert "7/8 live (k=4, rule unknown)" in text
    assert "repair due" not in text  # without the threshold, no claim that repair is due
    assert problem in text
    assert "[rules.gov]" in text or "6-of-14" in text


def test_the_table_shows_live_against_k_threshold_and_n_with_the_verdict():
    text = rendered(make_status([6, 5, 2]))
    assert "rule standard (4-of-8, repair below 6, grace 1h)" in text
    assert "6/8 live (k=4, repair below 6)" in text
    assert "5/8 live (k=4, repair below 6)" in text
    assert "2/8 live (k=4, repair below 6)" in text
    lines = text.splitlines()
    row = {live: next(line for line in lines if f"{live}/8 live" in line) for live in (6, 5, 2)}
    assert "healthy" in row[6] and "degraded: repair due" in row[5] and "unreadable" in row[2]
    assert "3 chunk(s): unreadable" in text


def test_live_text_reads_as_documented():
    assert live_text(6, 4, 8, 6) == "6/8 live (k=4, repair below 6)"


def test_a_holder_being_drained_is_shown_leaving_not_silent():
    status = make_status([6])  # shares 0-5 present, 6 missing, 7 unanswered
    drained = status.placement.chunks[0][7]
    assert drained is not None
    leaving = dataclasses.replace(status, leaving=frozenset({drained.node_id}))
    assert "silent" in rendered(status) and "leaving" not in rendered(status)
    text = rendered(leaving)
    assert "↗ leaving" in text and "✗ silent" not in text
    assert "being drained" in text
    shares = stat_summary(leaving)["chunks"][0]["fragments"]
    assert [f["leaving"] for f in shares] == [False] * 7 + [True]


def test_each_holder_shows_how_fresh_its_receipt_is():
    """Stewards renew receipts every round: a receipt issued 2 h ago is fresh, one not renewed
    for 2 days is stale, a share without one says so, and further holders are counted."""
    status = make_status([8], n=4, k=2)
    now = 1_800_000_000.0
    holders = status.placement.chunks[0]
    extra = Candidate(hashlib.sha1(b"extra").digest(), "10.0.0.9:7400", "dc-9", "FR-GES")
    placement = Placement(
        status.placement.object_id,
        4,
        status.placement.chunks,
        (((extra,), (), (), ()),),
    )
    receipts = {
        (holders[0].node_id, 0): Statement(True, int((now - 7300) * 1000), int((now + DAY) * 1000)),
        (holders[1].node_id, 1): Statement(True, int((now - 2 * DAY) * 1000), int(now * 1000) + 1),
        (extra.node_id, 0): Statement(True, int((now - 60) * 1000), int((now + DAY) * 1000)),
    }
    status = dataclasses.replace(
        status,
        placement=placement,
        receipts=receipts,
        answers={(extra.node_id, 0): False},
        checked_at=now,
    )
    text = rendered(status)
    assert "receipt 2h" in text and "receipt stale 2d" in text and "no receipt" in text
    assert "+1 more holder" in text
    shares = stat_summary(status)["chunks"][0]["fragments"]
    assert shares[0]["receipt"]["fresh"] and not shares[1]["receipt"]["fresh"]
    assert shares[2]["receipt"] is None
    assert [h["node_id"] for h in shares[0]["holders"]] == [
        holders[0].node_id.hex(),
        extra.node_id.hex(),
    ]
    assert shares[0]["holders"][1] == {
        "node_id": extra.node_id.hex(),
        "datacenter": "dc-9",
        "region": "FR-GES",
        "present": False,
        "leaving": False,
        "receipt": {"issued_at": now - 60, "expires_at": now + DAY, "fresh": True},
    }
