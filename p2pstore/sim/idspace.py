"""The simulator's oracle over the id space: the peers truly XOR-closest to a key, fast.

Why not sort every peer by distance (what ``SimulatedDht.oracle`` does): stewards, record
holders and lookup checks ask this thousands of times per simulated day over 10,000 peers.
Ids sharing a longer prefix with the key are always closer than ids sharing a shorter one, and
the ids sharing a given prefix are one contiguous run of the sorted ids; so the ``count``
closest peers passing a filter lie in the smallest such run that holds ``count`` of them, found
with a few bisections and a scan of about ``2 * count`` ids.  Exact, and independent of set or
hash order.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable

from p2pstore.core.contact import ID_BITS
from p2pstore.errors import LocalProtocolError


class IdIndex:
    """Peer numbers sorted by their ids (as integers).  Peers are only added: a departed peer
    stays and is filtered out by the caller's ``keep``."""

    __slots__ = ("_longs", "_peers")

    def __init__(self) -> None:
        self._longs: list[int] = []
        self._peers: list[int] = []

    def __len__(self) -> int:
        return len(self._longs)

    def add(self, long_id: int, peer: int) -> None:
        """Index ``peer`` under ``long_id``.  Raises :class:`LocalProtocolError` on a duplicate
        id (ids are drawn at random; a collision is a bug in the caller)."""
        where = bisect_left(self._longs, long_id)
        if where < len(self._longs) and self._longs[where] == long_id:
            raise LocalProtocolError(f"id {long_id:#x} is already indexed")
        insort(self._longs, long_id)
        self._peers.insert(where, peer)

    def _span(self, key: int, prefix: int) -> tuple[int, int]:
        """Positions of the ids sharing the first ``prefix`` bits with ``key``."""
        width = ID_BITS - prefix
        low = (key >> width) << width
        return bisect_left(self._longs, low), bisect_left(self._longs, low + (1 << width))

    def closest(self, key: int, count: int, keep: Callable[[int], bool] | None = None) -> list[int]:
        """The ``count`` peers nearest ``key`` by XOR among those for which ``keep(peer)`` is
        true (all if ``keep`` is None), nearest first; fewer if fewer pass."""
        if count <= 0 or not self._longs:
            return []
        low_prefix, high_prefix = 0, ID_BITS  # find the longest prefix whose run holds count ids
        while low_prefix < high_prefix:
            middle = (low_prefix + high_prefix + 1) // 2
            start, end = self._span(key, middle)
            if end - start >= count:
                low_prefix = middle
            else:
                high_prefix = middle - 1
        prefix = low_prefix
        while True:
            start, end = self._span(key, prefix)
            kept = [
                (self._longs[i] ^ key, self._peers[i])
                for i in range(start, end)
                if keep is None or keep(self._peers[i])
            ]
            if len(kept) >= count or prefix == 0:
                break
            prefix -= 1
        kept.sort()
        return [peer for _, peer in kept[:count]]
