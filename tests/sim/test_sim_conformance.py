"""Agreement with the real code: one scenario, ``simulations/conformance.toml``, run by the
simulator and by real nodes with stewards on the in-memory trio network under the mock clock,
and the outcomes compared figure by figure.

The scenario is built so that every decision both sides make is determined whatever the node
ids and fragment ids (which differ: the simulator draws them from its seed, the real nodes get
them from their keys and their ciphertext): objects are put while exactly ``n`` datacenters of
the rule's regions are up, so every chunk has one fragment in each; the datacenters killed then
take the same number of fragments from every chunk; and the repair finds exactly as many
datacenters of the rule's regions with room as it needs.  So the figures must be equal, not
close: objects stored and lost, chunks, chunk repairs, fragments rebuilt, fragments per
datacenter at the end.  Time is compared in rounds, the unit the shared semantics fix: a killed
holder's silence starts at the first round of its steward after the kill, and its chunk is
repaired at the first round at which the grace period has run out.  (The two sides' rounds
have different phases, and a real round lasts a few seconds after its ``check_interval``
sleep, so the instants differ by design.)"""

from __future__ import annotations

import dataclasses
import io
import math
import random
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pstore.core.placement import Candidate, within_rule
from p2pstore.core.records import RecordKind
from p2pstore.core.rules import CodingRule
from p2pstore.errors import P2PStoreError
from p2pstore.net.client import ClientSettings
from p2pstore.net.steward import StewardSettings
from p2pstore.sim import Simulation, load_scenario, scenario_from_dict
from p2pstore.sim.scenario import Scenario, applied_rule
from p2pstore.testing.net_harness import NetHarness
from p2pstore.testing.storage_mesh import StorageMesh

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent.parent / "simulations" / "conformance.toml"




@dataclass(frozen=True)
class Repaired:
    """One chunk repair: when its steward started the silence of the chunk's first lost
    holder, when the repair began, and when that steward's rounds began."""

    silent_since: float
    began: float
    rounds: tuple[float, ...]


@dataclass(frozen=True)
class Figures:
    """What one side did, in the terms both sides share."""

    objects_stored: int
    objects_lost: int
    chunks: int
    fragments_rebuilt: int
    per_datacenter: dict[str, int]
    """Fragments held at the end by each datacenter (over every chunk)."""
    rows: list[list[Candidate]]
    """Every chunk's holders at the end."""
    repairs: list[Repaired]
    messages: dict[str, int]
    """Repair requests sent to other peers, by message type."""
    records: dict[str, int]
    """Records stored on other peers after the kill, by record kind."""


@dataclass(frozen=True)
class Timeline:
    """The scenario's churn as the real mesh replays it."""

    late: frozenset[str]
    """Datacenters down from the start: they join, empty, at ``join_at``."""
    join_at: float
    killed: frozenset[str]
    kill_at: float
    away: frozenset[str] = frozenset()
    """Datacenters unreachable from ``kill_at`` until ``back_at`` (they keep their fragments)."""
    back_at: float = 0.0


def timeline(scenario: Scenario) -> Timeline:
    """Read the kinds of outage the conformance scenarios use (and refuse any other)."""
    churn = scenario.churn
    assert churn.sessions is None and churn.lifetime is None and not churn.trace
    assert not churn.partitions and not churn.replace_departed
    late = [o for o in churn.outages if o.at == 0 and not o.permanent]
    killed = [o for o in churn.outages if o.permanent]
    away = [o for o in churn.outages if o.at != 0 and not o.permanent]
    assert len(late) == len(killed) == 1 and len(away) <= 1
    assert all(o.scope == "datacenter" and o.every is None for o in churn.outages)
    assert all(o.duration.kind == "fixed" for o in (*late, *away)) and killed[0].at is not None
    kill_at = killed[0].at
    if not away:
        return Timeline(
            frozenset(late[0].targets), late[0].duration.a, frozenset(killed[0].targets), kill_at
        )
    assert away[0].at == kill_at
    return Timeline(
        frozenset(late[0].targets),
        late[0].duration.a,
        frozenset(killed[0].targets),
        kill_at,
        frozenset(away[0].targets),
        kill_at + away[0].duration.a,
    )


# -- the simulator -----------------------------------------------------------------------------


def simulated(scenario: Scenario) -> Figures:
    simulation = Simulation(scenario)
    simulation.run()
    # what had been sent by the kill: the same run (same seed, same events) cut there
    cut = Simulation(dataclasses.replace(scenario, duration=timeline(scenario).kill_at))
    cut.run()
    before = cut.counters.records
    outcome = simulation.outcome()
    peers = simulation.peers
    chunks = simulation.storage.chunks
    rows = [
        [peers.candidate(h) for h in chunk.holders if not peers.departed[h]] for chunk in chunks
    ]
    assert outcome.chunks_below_n == 0 == outcome.placement_violations
    assert all(chunk.live == simulation.rule.n for chunk in chunks)
    silences = {
        health.silent_since
        for peer in range(len(peers))
        if peers.departed[peer]
        and (health := simulation.detector.health(peers.node_id[peer])).silent_since is not None
    }
    # The stewards' rounds: every check_interval from the run's phase.
    interval = scenario.repair.check_interval
    first = simulation.next_check(0.0)
    rounds = tuple(first + j * interval for j in range(math.ceil(scenario.duration / interval)))
    # Holders that fail together fall silent together (in one round of the chunk's steward),
    # and every chunk was repaired at once: one silence, one repair time.
    assert len(silences) == 1 and outcome.first_repair_at == outcome.last_repair_at
    (silent_since,) = silences
    began = outcome.first_repair_at
    assert began is not None
    return Figures(
        objects_stored=outcome.objects_stored,
        objects_lost=outcome.objects_lost,
        chunks=len(chunks),
        fragments_rebuilt=outcome.fragments_rebuilt,
        per_datacenter=dict(Counter(h.datacenter for row in rows for h in row)),
        rows=rows,
        repairs=[Repaired(silent_since, began, rounds)] * outcome.repair_jobs,
        messages=dict(simulation.counters.messages),
        records={
            kind: count - before.get(kind, 0)
            for kind, count in simulation.counters.records.items()
            if count > before.get(kind, 0)
        },
    )


# -- real nodes --------------------------------------------------------------------------------


async def on_real_nodes(scenario: Scenario, tmp_path: Path) -> Figures:
    """The scenario on real nodes with stewards, in memory, under the (autojump) mock clock."""
    rule = applied_rule(scenario)
    when = timeline(scenario)
    datacenters = scenario.mesh.datacenters
    count = scenario.mesh.peers
    # The storage mesh puts node i in datacenter i mod len(datacenters), named dc-<index>.
    assert [dc.name for dc in datacenters] == [f"dc-{i}" for i in range(len(datacenters))]
    assert [dc.peers for dc in datacenters] == [
        len(range(i, count, len(datacenters))) for i in range(len(datacenters))
    ]
    assert scenario.workload.object_size.kind == "fixed"
    size = int(scenario.workload.object_size.a)
    mesh = StorageMesh(
        NetHarness("memory", tmp_path),
        count,
        datacenters=len(datacenters),
        regions=tuple(dc.region for dc in datacenters),
        rules=(rule,),
        steward=StewardSettings(check_interval=scenario.repair.check_interval),
        settings=ClientSettings(
            chunk_size=scenario.workload.chunk_size, fragment_timeout=10.0, hedge_after=3.0
        ),
    )
    repairs: list[tuple[float, float, list[float], int]] = []
    stored: Counter[str] = Counter()
    for member in mesh.nodes:
        watch(member.steward, repairs)
        count_records(member.dht.publisher, stored)
    early = [m for m in mesh.nodes if m.datacenter not in when.late]
    late = [m for m in mesh.nodes if m.datacenter in when.late]
    assert early[0] is mesh.nodes[0]
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery, count=1)
        await mesh.start_more(nursery, early[1:])
        client = await mesh.client(nursery)
        puts = []
        for number in range(scenario.workload.objects):
            data = random.Random(number).randbytes(size)
            puts.append((data, await client.put(io.BytesIO(data), size, rule)))
        assert trio.current_time() < when.join_at, "the puts outlasted the scenario's schedule"
        await trio.sleep_until(when.join_at)
        await mesh.start_more(nursery, late)
        assert trio.current_time() < when.kill_at
        await trio.sleep_until(when.kill_at)
        before = requests_sent(mesh)
        records_before = Counter(stored)
        for member in mesh.nodes:
            if member.datacenter in when.killed:
                mesh.kill(member)
            elif member.datacenter in when.away:
                mesh.net.network.vanish(member.node.address)
        if when.away:
            await trio.sleep_until(when.back_at)
            for member in mesh.nodes:
                if member.datacenter in when.away:
                    mesh.net.network.reappear(member.node.address)
        await trio.sleep_until(scenario.duration)
        after = requests_sent(mesh)
        messages = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in REPAIR_MESSAGES}
        records = {kind: n for kind, n in (stored - records_before).items() if n}
        figures = await real_figures(client, puts, rule, repairs, messages, records)
        nursery.cancel_scope.cancel()
    return figures


def watch(steward, repairs: list[tuple[float, float, list[float], int]]) -> None:
    """Record when each round of ``steward`` begins, and every chunk repair it completes:
    when its detector started the silence of the chunk's first lost holder, when the repair
    began (right after the round's assessment), and how many shares it rebuilt."""
    rounds: list[float] = []
    check_round = steward.check_round
    repair_object = steward.repairer.repair_object

    async def timed_round(at=None):
        rounds.append(trio.current_time())
        return await check_round(at)

    async def recorded_repair(watched, limiter, failures):
        began = trio.current_time()
        silent_since = {}
        for index, assessment in enumerate(watched.assessments):
            row = watched.placement.chunks[index]
            health = steward.detector.health
            times = [health(row[share].node_id).silent_since for share in assessment.lost]
            silent_since[index] = min((t for t in times if t is not None), default=-math.inf)
        done = await repair_object(watched, limiter, failures)
        # (the list of rounds grows as the run goes on; it is read at the end)
        repairs.extend((silent_since[r.chunk], began, rounds, len(r.shares)) for r in done)
        return done

    steward.check_round = timed_round
    steward.repairer.repair_object = recorded_repair


def count_records(publisher, stored: Counter[str]) -> None:
    """Count every record ``publisher`` stores on another peer, by kind (its own records, a
    steward's, and those it hands over to a newcomer alike)."""
    store_on = publisher.store_on

    async def counted(contact, record):
        stored[RecordKind(record.kind).name] += 1
        return await store_on(contact, record)

    publisher.store_on = counted


REPAIR_MESSAGES = ("GetFragment", "PutFragment")


def requests_sent(mesh) -> dict[str, int]:
    """Requests the storage nodes sent so far, by message type (any outcome)."""
    counts: Counter[str] = Counter()
    for member in mesh.nodes:
        for family in member.node.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == "p2pstore_requests_sent_total":
                    counts[sample.labels["type"]] += int(sample.value)
    return dict(counts)


async def real_figures(client, puts, rule: CodingRule, repairs, messages, records) -> Figures:
    rows: list[list[Candidate]] = []
    replaced = 0
    lost = 0
    for data, result in puts:
        status = await client.stat(result.verify_cap)
        for index, row in enumerate(status.placement.chunks):
            assert status.live(index) == rule.n, "a chunk is not back to n live fragments"
            rows.append([h for h in row if h is not None])
            before = result.placement.chunks[index]
            replaced += sum(a != b for a, b in zip(before, row, strict=True))
        try:
            lost += await read_back(client, result.read_cap) != data
        except P2PStoreError:
            lost += 1
    rebuilt = sum(shares for *_, shares in repairs)
    assert rebuilt == replaced  # every rebuilt share replaced a holder; none was rebuilt twice
    return Figures(
        objects_stored=len(puts),
        objects_lost=lost,
        chunks=sum(result.manifest.chunk_count for _, result in puts),
        fragments_rebuilt=rebuilt,
        per_datacenter=dict(Counter(h.datacenter for row in rows for h in row)),
        rows=rows,
        repairs=[Repaired(silent, began, tuple(rounds)) for silent, began, rounds, _ in repairs],
        messages={kind: count for kind, count in messages.items() if count},
        records=records,
    )


async def read_back(client, cap) -> bytes:
    out = bytearray()

    async def write(piece: bytes) -> None:
        out.extend(piece)

    await client.get(cap, write)
    return bytes(out)


# -- the comparison ----------------------------------------------------------------------------


def assert_within_rule(figures: Figures, rule: CodingRule, killed: frozenset[str]) -> None:
    for row in figures.rows:
        assert len(row) == rule.n
        assert within_rule(row, rule), "a chunk breaks its rule (a peer twice, or a datacenter)"
        assert {h.region for h in row} <= rule.regions, "a chunk left its regions"
        assert not {h.datacenter for h in row} & killed


def assert_round_semantics(figures: Figures, when: Timeline, grace: float) -> None:
    """Every repaired chunk's lost holder fell silent in its steward's first round after the
    kill (one round began in between), and the repair began in the first round at which the
    grace period had run out: never before, and no whole round after it."""
    assert figures.repairs
    for repair in figures.repairs:
        started = [r for r in repair.rounds if when.kill_at < r <= repair.silent_since]
        assert len(started) == 1, f"silence began {len(started)} rounds after the kill"
        deadline = repair.silent_since + grace
        assert repair.began >= deadline, "repaired inside the grace period"
        late = [r for r in repair.rounds if deadline <= r <= repair.began]
        assert len(late) <= 1, f"repaired {len(late)} rounds after the grace period"


async def test_the_simulator_and_real_nodes_agree_on_the_conformance_scenario(
    tmp_path, autojump_clock
):
    scenario = load_scenario(SCENARIO)
    rule = applied_rule(scenario)
    when = timeline(scenario)
    sim = simulated(scenario)
    real = await on_real_nodes(scenario, tmp_path)

    # The same work, the same outcome.
    assert real.objects_stored == sim.objects_stored == scenario.workload.objects
    assert real.chunks == sim.chunks
    assert real.objects_lost == sim.objects_lost == 0
    # Every chunk lost the killed datacenters' fragments and was rebuilt, in one repair each.
    assert len(real.repairs) == len(sim.repairs) == sim.chunks
    assert real.fragments_rebuilt == sim.fragments_rebuilt == sim.chunks * len(when.killed)
    # The same datacenters hold the same number of fragments: the rule, placed alike.
    assert real.per_datacenter == sim.per_datacenter
    assert_within_rule(sim, rule, when.killed)
    assert_within_rule(real, rule, when.killed)
    # The same timing, in rounds.
    assert_round_semantics(sim, when, rule.grace_period)
    assert_round_semantics(real, when, rule.grace_period)
    assert_same_messages(real, sim, rule.k)
    assert_record_traffic(sim, scenario)
    assert_record_traffic(real, scenario)


# -- conformance as a property ------------------------------------------------------------------

FR_REGIONS = ("FR-GES", "FR-IDF")
RULE_SHAPES = ((2, 4, 3), (2, 4, 4), (3, 5, 4), (2, 5, 4))
"""(k, n, repair threshold) of the generated rules: lazy and eager repair, three codes."""


@dataclass(frozen=True)
class Case:
    """A small conformance scenario: ``n`` French datacenters at put time (the first
    ``doubled`` of them with two peers), ``killed`` of them gone for good at 30 minutes and
    ``away`` more unreachable then for ``away_for`` seconds (less than the grace period: they
    come back with their fragments), and as many French newcomers as repair needs, joining at
    20 minutes, with a German one beside them when ``outsider``."""

    k: int
    n: int
    threshold: int
    doubled: int
    killed: int
    away: int
    away_for: float
    outsider: bool
    objects: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    k, n, threshold = draw(st.sampled_from(RULE_SHAPES))
    # below the threshold once they are gone, and still k live: every chunk is repaired
    killed = draw(st.integers(n - threshold + 1, n - k))
    away = draw(st.integers(0, min(1, n - k - killed)))
    return Case(
        k,
        n,
        threshold,
        doubled=draw(st.integers(0, 2)),
        killed=killed,
        away=away,
        away_for=draw(st.sampled_from((120.0, 360.0))),
        outsider=draw(st.booleans()),
        objects=draw(st.integers(1, 2)),
    )


def scenario_of(case: Case) -> Scenario:
    early = [FR_REGIONS[i % 2] for i in range(case.n)]
    late = [FR_REGIONS[i % 2] for i in range(case.killed)] + (["DE-BY"] if case.outsider else [])
    regions = early + late
    names = [f"dc-{i}" for i in range(len(regions))]
    count = len(regions) + case.doubled  # the storage mesh gives the first ones a second peer
    outages = [
        {"scope": "datacenter", "targets": names[case.n :], "at": "0s", "duration": "20m"},
        {"scope": "datacenter", "targets": names[: case.killed], "at": "30m", "permanent": True},
    ]
    if case.away:
        away = names[case.killed : case.killed + case.away]
        outages.append(
            {"scope": "datacenter", "targets": away, "at": "30m", "duration": case.away_for}
        )
    data = {
        "name": "conformance-property",
        "seed": 11,
        "duration": "1h",
        "sample_every": "10m",
        "mesh": {
            "datacenters": [
                {"name": name, "region": region, "peers": len(range(i, count, len(regions)))}
                for i, (name, region) in enumerate(zip(names, regions, strict=True))
            ]
        },
        "churn": {"replace_departed": False, "outages": outages},
        "workload": {"objects": case.objects, "object_size": "100KiB", "chunk_size": "64KiB"},
        "rule": {
            "name": "standard",
            "k": case.k,
            "n": case.n,
            "repair_at": case.threshold - 1,
            "regions": list(FR_REGIONS),
            "grace_period": "10m",
        },
        "repair": {"detection": "periodic", "check_interval": "1m"},
        "dht": {"bootstrap": "join", "lookup_sample": 0.0},
    }
    return scenario_from_dict(data)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(cases())
def test_the_simulator_and_real_nodes_agree_on_generated_scenarios(case: Case) -> None:
    """For small generated scenarios (mesh shape, rule, datacenters killed, away and back),
    real nodes in memory and the simulator repair the same chunks, rebuild the same number of
    fragments, hold the rule alike, and send the same repair requests."""
    scenario = scenario_of(case)
    rule = applied_rule(scenario)
    when = timeline(scenario)
    sim = simulated(scenario)
    with tempfile.TemporaryDirectory() as tmp:
        real = trio.run(
            on_real_nodes, scenario, Path(tmp), clock=trio.testing.MockClock(autojump_threshold=0)
        )
    assert real.objects_stored == sim.objects_stored == case.objects
    assert real.chunks == sim.chunks
    assert real.objects_lost == sim.objects_lost == 0
    assert len(real.repairs) == len(sim.repairs) == sim.chunks
    assert real.fragments_rebuilt == sim.fragments_rebuilt == sim.chunks * case.killed
    assert real.per_datacenter == sim.per_datacenter
    assert_within_rule(sim, rule, when.killed)
    assert_within_rule(real, rule, when.killed)
    assert_round_semantics(sim, when, rule.grace_period)
    assert_round_semantics(real, when, rule.grace_period)
    assert_same_messages(real, sim, case.k)
    assert_record_traffic(sim, scenario)
    assert_record_traffic(real, scenario)


def assert_record_traffic(figures: Figures, scenario: Scenario) -> None:
    """Records sent after the kill, as the core's :class:`StewardRecords` decides: each
    repaired object's placement once, after its repair (the repairer's publish; the steward
    does not send it again that round), plus a manifest and a placement per object whose
    steward died and was taken over (which object that is depends on the ids: not compared
    between the sides).  Each record goes to every live peer but its publisher (k > peers)."""
    when = timeline(scenario)
    gone = sum(dc.peers for dc in scenario.mesh.datacenters if dc.name in when.killed)
    fanout = scenario.mesh.peers - gone - 1
    objects = scenario.workload.objects
    manifests = figures.records.get("MANIFEST", 0)
    placements = figures.records.get("PLACEMENT", 0)
    assert placements - manifests == objects * fanout, figures.records
    assert manifests <= objects * fanout, figures.records
    assert set(figures.records) <= {"MANIFEST", "PLACEMENT"}, figures.records


def assert_same_messages(real: Figures, sim: Figures, k: int) -> None:
    """The same repair requests per kind.  Which peer stewards a chunk depends on the ids,
    which differ between the sides, and a steward reads and writes its own store without a
    message: so each repair may differ by the one share its steward holds or takes."""
    repairs = len(sim.repairs)
    for kind in REPAIR_MESSAGES:
        assert abs(real.messages.get(kind, 0) - sim.messages.get(kind, 0)) <= repairs, kind
    assert sim.messages.get("GetFragment", 0) >= repairs * (k - 1)
