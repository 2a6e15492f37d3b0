"""The protocol's numbers that the node and the simulator must share, in one place.

Why one module: each of these once had a copy in ``net/`` and one in ``sim/`` (the node tried
four holders per fragment while the simulator retried without limit; the node pinged two closer
contacts before stewarding while the simulator asked an oracle).  The node's settings and the
simulator's scenario defaults read them from here; a test asserts both still do.
"""

from __future__ import annotations

from typing import Final

STORE_ATTEMPTS: Final = 4
"""Holders tried for one fragment (of a put or a repair) before it is given up."""

MAX_CLOSER: Final = 2
"""Closer contacts a node pings before stepping in as an object's steward; with more closer
contacts it known alive, it leaves the object to them."""

CHECK_INTERVAL: Final = 600.0
"""Seconds between two steward rounds (a lost holder is noticed within one round of its grace)."""

PLACEMENT_REFRESH: Final = 86400.0
"""Seconds after which a steward publishes its placement record again even if no holder
changed (receipts live three days)."""

QUERY_TIMEOUT: Final = 10.0
"""Seconds a holder has to answer a steward's check or ping."""
