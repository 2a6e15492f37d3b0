"""A revocation list says when the CA will have published a newer one (its next-update date);
past it, the list a node enforces may be missing revocations.  Say so (a metric, a log line).

Decision: a node keeps enforcing a stale list.  It still revokes everything it names, and
refusing every peer because the CA operator published late would turn a missed chore into an
outage of the whole mesh; the revocations the node may be missing arrive with the next list
(``p2pstore ca publish``), which it takes at once.  An operator who prefers a node that will not
start on a stale file sets ``[identity] require_fresh_revocation_list = true``: then a node
whose ``revocation_list`` file is past its next update refuses to start, saying so.  A running
node never stops over it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry, Gauge

from p2pstore.errors import ConfigError
from p2pstore.identity import TrustAnchor

log = logging.getLogger("p2pstore.node")

CHECK_INTERVAL = 3600.0
"""Seconds between two looks at the list in force (it may be replaced from the mesh at any time)."""
REPEAT_AFTER = 24 * 3600.0
"""A stale list is logged again after a day: visible in any log retention, not a flood."""


def overdue(trust: TrustAnchor, now: datetime) -> timedelta | None:
    """How long past its next update the list in force is; None if it is not (or has none)."""
    due = trust.crl_next_update
    if due is None or now < due:
        return None
    return now - due


def check_file_at_start(
    trust: TrustAnchor, path: Path | None, now: datetime, *, strict: bool
) -> None:
    """At start: log ``revocation_list_stale`` if the file's list is past its next update, and
    with ``strict`` raise :class:`ConfigError` instead (the node does not start), as when there
    is no file to check."""
    if strict and path is None:
        raise ConfigError(
            "[identity] require_fresh_revocation_list is set but revocation_list is not"
        )
    late = overdue(trust, now)
    if late is None:
        return
    if strict:
        raise ConfigError(
            f"[identity] revocation_list {path}: the list (number {trust.crl_number}) was due to "
            f"be replaced on {_iso(trust.crl_next_update)}, {_days(late)} ago, and "
            "require_fresh_revocation_list is set: copy the CA's current crl.pem there (on the "
            "CA machine: p2pstore ca publish re-signs it), or unset the key to start on the "
            "stale list and take the newer one from the mesh"
        )
    _log_stale(trust, late)


def register_crl_metric(
    registry: CollectorRegistry, trust: Callable[[], TrustAnchor], wall_clock: Callable[[], float]
) -> None:
    """``p2pstore_revocation_list_next_update_seconds``: seconds until the list in force is due
    to be replaced (negative once past; NaN without a list), read at each scrape."""

    def seconds() -> float:
        due = trust().crl_next_update
        return math.nan if due is None else due.timestamp() - wall_clock()

    Gauge(
        "p2pstore_revocation_list_next_update_seconds",
        "Seconds until the revocation list in force is due to be replaced (its next update); "
        "negative once past: the mesh CA should publish a newer one (p2pstore ca publish).",
        registry=registry,
    ).set_function(seconds)


async def warn_while_stale(
    trust: Callable[[], TrustAnchor], wall_clock: Callable[[], float]
) -> None:
    """Every hour, log ``revocation_list_stale`` if the list in force is past its next update:
    at once for each list found stale, then daily while it stays so."""
    said: tuple[int, float] | None = None  # (list number, when)
    while True:
        current = trust()
        now = wall_clock()
        late = overdue(current, datetime.fromtimestamp(now, UTC))
        if late is not None and (
            said is None or said[0] != current.crl_number or now - said[1] >= REPEAT_AFTER
        ):
            _log_stale(current, late)
            said = (current.crl_number, now)
        await trio.sleep(CHECK_INTERVAL)


def _log_stale(trust: TrustAnchor, late: timedelta) -> None:
    log.warning(
        "the revocation list in force (number %d) is past its next update (%s, %s ago): the "
        "node keeps enforcing it, but may miss revocations; the mesh CA should publish a newer "
        "one (p2pstore ca publish)",
        trust.crl_number,
        _iso(trust.crl_next_update),
        _days(late),
        extra={
            "event": "revocation_list_stale",
            "number": trust.crl_number,
            "next_update": _iso(trust.crl_next_update),
            "days_overdue": round(late / timedelta(days=1), 1),
        },
    )


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat()


def _days(late: timedelta) -> str:
    return f"{late / timedelta(days=1):.1f} days"
