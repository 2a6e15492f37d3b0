"""A revocation list past its next update: the node keeps enforcing it and warns (a log line,
a metric), or, configured so, refuses to start on a stale file.  ``ca publish`` re-signs the
list so it never goes stale."""

from __future__ import annotations

import math
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry
from test_cli_node import DEADLINE, mesh, node_command, node_process, write_config

from p2pstore.cli.crl_freshness import (
    CHECK_INTERVAL,
    REPEAT_AFTER,
    check_file_at_start,
    overdue,
    register_crl_metric,
    warn_while_stale,
)
from p2pstore.errors import ConfigError
from p2pstore.identity import MeshCA, TrustAnchor

__all__ = ["mesh"]  # the fixture, imported for the process tests

NOW = datetime(2027, 3, 1, tzinfo=UTC)


def stale_events(caplog) -> list:
    return [r for r in caplog.records if getattr(r, "event", "") == "revocation_list_stale"]


def anchor(ca: MeshCA, next_update: datetime | None, number: int = 1) -> TrustAnchor:
    return TrustAnchor(ca.certificate, frozenset(), next_update, number)


@pytest.fixture
def ca(tmp_path) -> MeshCA:
    return MeshCA.create(tmp_path / "ca", mesh_name="m", now=NOW - timedelta(days=60))


def test_overdue_counts_from_the_next_update(ca) -> None:
    assert overdue(anchor(ca, NOW + timedelta(seconds=1)), NOW) is None
    assert overdue(anchor(ca, None), NOW) is None
    assert overdue(anchor(ca, NOW - timedelta(days=2)), NOW) == timedelta(days=2)


def test_a_stale_file_is_logged_at_start_or_refused_when_configured(ca, tmp_path, caplog) -> None:
    stale = anchor(ca, NOW - timedelta(days=3), number=4)
    path = tmp_path / "crl.pem"
    check_file_at_start(stale, path, NOW, strict=False)
    (line,) = stale_events(caplog)
    assert (line.number, line.days_overdue) == (4, 3.0)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"crl\.pem.*2027-02-26.*3\.0 days ago"):
        check_file_at_start(stale, path, NOW, strict=True)
    check_file_at_start(anchor(ca, NOW + timedelta(days=1)), path, NOW, strict=True)
    with pytest.raises(ConfigError, match="revocation_list is not"):
        check_file_at_start(anchor(ca, None), None, NOW, strict=True)
    assert len(stale_events(caplog)) == 1


def test_the_metric_follows_the_list_in_force(ca) -> None:
    registry = CollectorRegistry()
    current = [anchor(ca, NOW + timedelta(hours=1))]
    register_crl_metric(registry, lambda: current[0], NOW.timestamp)
    name = "p2pstore_revocation_list_next_update_seconds"
    assert registry.get_sample_value(name) == 3600
    current[0] = anchor(ca, NOW - timedelta(days=1), number=2)  # e.g. adopted from the mesh
    assert registry.get_sample_value(name) == -86400
    current[0] = anchor(ca, None)
    assert math.isnan(registry.get_sample_value(name) or 0.0)


def test_a_running_node_warns_at_once_then_daily_and_for_each_stale_list(ca, caplog) -> None:
    start = NOW.timestamp()
    due = NOW + timedelta(hours=5)
    current = [anchor(ca, due, number=1)]

    def wall() -> float:
        return start + trio.current_time()

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(warn_while_stale, lambda: current[0], wall)
            await trio.sleep(CHECK_INTERVAL / 2)  # look between the watcher's hourly checks
            await trio.sleep(4 * CHECK_INTERVAL)
            assert stale_events(caplog) == []  # not due yet
            await trio.sleep(2 * CHECK_INTERVAL)
            assert len(stale_events(caplog)) == 1  # within the hour after it became due
            await trio.sleep(REPEAT_AFTER - 2 * CHECK_INTERVAL)
            assert len(stale_events(caplog)) == 1  # not again within a day
            await trio.sleep(2 * CHECK_INTERVAL)
            assert len(stale_events(caplog)) == 2  # a day later, again
            current[0] = anchor(ca, due, number=2)  # another list, stale as well
            await trio.sleep(CHECK_INTERVAL)
            assert len(stale_events(caplog)) == 3
            assert stale_events(caplog)[-1].number == 2
            current[0] = anchor(ca, NOW + timedelta(days=60), number=3)  # a fresh list
            await trio.sleep(3 * REPEAT_AFTER)
            assert len(stale_events(caplog)) == 3
            nursery.cancel_scope.cancel()

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


def test_ca_publish_re_signs_the_list_ahead(ca) -> None:
    before = TrustAnchor.load(ca.directory / "ca.crt", ca.directory / "crl.pem")
    assert overdue(before, NOW) is not None  # signed 60 days ago, due after 30
    ca.refresh_revocation_list(now=NOW)
    after = TrustAnchor.load(ca.directory / "ca.crt", ca.directory / "crl.pem")
    assert after.crl_number == before.crl_number + 1
    assert after.revoked_serials == before.revoked_serials
    assert after.crl_next_update == NOW + timedelta(days=30)
    assert overdue(after, NOW) is None


def make_stale(authority: MeshCA) -> None:
    """Re-sign the mesh's crl.pem as if 40 days ago: its next update is 10 days past."""
    authority.refresh_revocation_list(now=datetime.now(UTC) - timedelta(days=40))


def test_a_node_refuses_to_start_on_a_stale_file_when_configured(mesh) -> None:
    authority, (first, _second) = mesh
    make_stale(authority)
    config = write_config(first, "json")
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("[identity]\n", "[identity]\nrequire_fresh_revocation_list = true\n"),
        encoding="utf-8",
    )
    result = subprocess.run(
        node_command(config), check=False, capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.splitlines()[-1]
    assert "require_fresh_revocation_list" in last and "crl.pem" in last and "days ago" in last


async def test_a_node_starts_on_a_stale_file_and_says_so(mesh) -> None:
    authority, (first, _second) = mesh
    make_stale(authority)
    config = write_config(first, "json")
    with trio.fail_after(DEADLINE):
        async with node_process(config) as daemon:
            stale = await daemon.wait_for_event("revocation_list_stale")
            assert stale["days_overdue"] == pytest.approx(10.0, abs=0.1)
            await daemon.wait_for_event("listening")
            assert stale["number"] == authority.trust_anchor().crl_number
            daemon.process.terminate()
            assert await daemon.process.wait() == 0
