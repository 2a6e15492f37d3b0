"""A node's certificates run out: say so long before (a metric, a log line, ``node status``).

Certificates are valid a year by default and the mesh CA's ten; a node whose certificate expired
is refused by every peer, so the warning starts ``EXPIRY_WARNING`` ahead (renewal is one command
on the CA machine, ``p2pstore ca renew``, and SIGHUP to the node) and repeats daily.  Both read
the certificate in use at each look, so a renewed one taken on SIGHUP counts at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import trio
from prometheus_client import CollectorRegistry, Gauge

from p2pstore.identity import TrustAnchor
from p2pstore.net.node import Node

log = logging.getLogger("p2pstore.node")

EXPIRY_WARNING = timedelta(days=30)
CHECK_INTERVAL = 24 * 3600.0
"""A warning a day: visible in any log retention, not a flood."""


def days_left_if_expiring(
    not_after: datetime, now: datetime, window: timedelta = EXPIRY_WARNING
) -> float | None:
    """Days until ``not_after`` if that is within ``window`` of ``now`` (negative once expired),
    else None."""
    left = not_after - now
    return left / timedelta(days=1) if left <= window else None


Expiries = dict[str, Callable[[], datetime]]
"""The end of each watched certificate (``node``, ``ca``), read when needed."""


def register_expiry_metric(
    registry: CollectorRegistry, certificates: Expiries, wall_clock: Callable[[], float]
) -> None:
    """``p2pstore_certificate_expiry_seconds{certificate}``: seconds until each certificate
    (``node``, ``ca``) expires, read at each scrape (negative once expired)."""
    gauge = Gauge(
        "p2pstore_certificate_expiry_seconds",
        "Seconds until a certificate expires (node: this node's own; ca: the mesh CA's); "
        "negative once expired. Renew below 30 days (p2pstore ca renew).",
        ("certificate",),
        registry=registry,
    )
    for label, not_after in certificates.items():
        gauge.labels(label).set_function(_seconds_until(not_after, wall_clock))


def _seconds_until(
    moment: Callable[[], datetime], wall_clock: Callable[[], float]
) -> Callable[[], float]:
    return lambda: moment().timestamp() - wall_clock()


async def warn_before_expiry(certificates: Expiries, wall_clock: Callable[[], float]) -> None:
    """Log ``certificate_expiring`` once a day for each certificate within 30 days of its end."""
    while True:
        now = datetime.fromtimestamp(wall_clock(), UTC)
        for label, end in certificates.items():
            not_after = end()
            days = days_left_if_expiring(not_after, now)
            if days is None:
                continue
            what = "this node's certificate" if label == "node" else "the mesh CA certificate"
            log.log(
                logging.ERROR if days < 7 else logging.WARNING,
                "%s %s %s: %s",
                what,
                "expired" if days < 0 else "expires",
                f"{-days:.0f} days ago" if days < 0 else f"in {days:.1f} days",
                "ask the mesh CA to renew it (p2pstore ca renew), install it in place of the "
                "old one and send the node SIGHUP"
                if label == "node"
                else "the mesh CA operator must renew the CA",
                extra={
                    "event": "certificate_expiring",
                    "certificate": label,
                    "days_left": round(days, 1),
                    "not_after": not_after.isoformat(),
                },
            )
        await trio.sleep(CHECK_INTERVAL)


def expiries(node: Node, trust: TrustAnchor) -> Expiries:
    """The node's certificates whose expiry is watched: its own (the one in use) and the mesh
    CA's."""
    ca_end = trust.ca_certificate.not_valid_after_utc
    return {"node": lambda: node.identity.not_after, "ca": lambda: ca_end}
