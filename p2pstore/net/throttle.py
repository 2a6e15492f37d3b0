"""Logging a refusal once per identity per interval, not once per request.

Why: a member that floods a node past its quota is refused on every request; a log line per
refusal would move the flood from the store to the node's log (and the operator's pager).  The
first refusal of an identity is logged at once, later ones are counted, and the next line, an
interval later, says how many were left out.  Bounded: at most ``max_identities`` are tracked;
past that the one logged longest ago is forgotten (its next refusal is logged again).
"""

from __future__ import annotations

from typing import Final

DEFAULT_INTERVAL: Final = 600.0
"""Seconds between two log lines about the same identity."""


class RefusalLog:
    """When to log a refusal about an identity (see the module docstring)."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, max_identities: int = 1024) -> None:
        self.interval = interval
        self.max_identities = max_identities
        self._seen: dict[bytes, tuple[float, int]] = {}  # identity -> (logged at, left out)

    def due(self, identity: bytes, now: float) -> int | None:
        """None if a refusal about ``identity`` at ``now`` should not be logged (it is counted);
        else how many refusals about it were left out since its last line."""
        seen = self._seen.get(identity)
        if seen is not None and now - seen[0] < self.interval:
            self._seen[identity] = (seen[0], seen[1] + 1)
            return None
        left_out = 0 if seen is None else seen[1]
        self._seen.pop(identity, None)
        while len(self._seen) >= self.max_identities:
            del self._seen[next(iter(self._seen))]  # the one logged longest ago
        self._seen[identity] = (now, 0)
        return left_out
