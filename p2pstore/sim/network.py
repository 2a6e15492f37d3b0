"""Transfers without bytes: how long moving ``size`` bytes between two peers takes.

Strategy: a transfer costs one-way latency plus ``size`` over the link's bandwidth, the
smallest of the sender's uplink, the receiver's downlink and, across regions, the WAN cap.
Each peer's uplink and downlink carry one transfer at a time, at full rate, and keep a
*calendar* of the intervals they are booked for: a transfer takes the earliest interval, at or
after the time it may start, in which both its ends are free for its whole duration.  A
booking made for the future (a repair books its uploads for when decoding ends, a day ahead
if decoding is slow) therefore leaves the time before it to every transfer that fits there,
as a batch scheduler's backfilling does; nothing waits behind a transfer that has not started.

Why calendars and not a fair-share (processor-sharing) model: with fair sharing every flow
that starts or ends changes the finishing time of every other flow on its links, so each
repair's landing event would have to be moved again and again (thousands of times in a repair
storm) and the model would need cancellable events; a calendar books a transfer once, in
``O(log b)`` for ``b`` bookings of a link, and one uncontended transfer still takes exactly
latency + size / bandwidth, so a repair's time is what the scenario's rates say.  What it
gives up: concurrent flows on a link are served one after another rather than side by side
(the last one lands at the same time either way; the first ones earlier).  Not modelled:
TCP's own dynamics, packet loss, congestion inside the network core.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable

from p2pstore.sim.scenario import NetworkSpec


class Calendar:
    """The intervals one link is booked for: sorted, never overlapping, adjacent ones merged;
    those that ended before the clock's time are dropped as new ones are booked."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def first_free(self, at: float, duration: float) -> float:
        """The earliest time >= ``at`` from which the link is free for ``duration``."""
        starts, ends = self.starts, self.ends
        index = bisect_right(ends, at)
        while index < len(starts) and starts[index] < at + duration:
            at = max(at, ends[index])
            index += 1
        return at

    def book(self, begin: float, end: float, now: float) -> None:
        """Book ``[begin, end)`` (free, as :meth:`first_free` found); forget what ended by
        ``now`` (no transfer asked for later can start before ``now``)."""
        starts, ends = self.starts, self.ends
        past = bisect_right(ends, now)
        if past:
            del starts[:past]
            del ends[:past]
        if end <= begin:
            return
        index = bisect_left(starts, begin)
        if index and ends[index - 1] >= begin:  # touches the one before: extend it
            index -= 1
            ends[index] = end
        else:
            starts.insert(index, begin)
            ends.insert(index, end)
        following = index + 1
        if following < len(starts) and starts[following] <= end:  # touches the one after
            ends[index] = ends[following]
            del starts[following]
            del ends[following]

    def __len__(self) -> int:
        return len(self.starts)


class Network:
    """Latency, bandwidth and the calendars of each peer's uplink and downlink."""

    __slots__ = ("_clock", "_datacenter", "_down", "_region", "_up", "bytes_moved", "spec")

    def __init__(self, spec: NetworkSpec, clock: Callable[[], float]) -> None:
        self.spec = spec
        self._clock = clock
        self._datacenter: list[int] = []
        self._region: list[int] = []
        self._up: list[Calendar] = []
        self._down: list[Calendar] = []
        self.bytes_moved = 0

    def add_peer(self, datacenter: int, region: int) -> None:
        """Register the next peer number with its datacenter and region indexes."""
        self._datacenter.append(datacenter)
        self._region.append(region)
        self._up.append(Calendar())
        self._down.append(Calendar())

    def latency(self, a: int, b: int) -> float:
        """One-way latency between peers ``a`` and ``b``."""
        if self._datacenter[a] == self._datacenter[b]:
            return self.spec.latency_datacenter
        if self._region[a] == self._region[b]:
            return self.spec.latency_region
        return self.spec.latency_wan

    def bandwidth(self, source: int, destination: int) -> float:
        """Bytes per second of one transfer from ``source`` to ``destination``."""
        rate = min(self.spec.uplink, self.spec.downlink)
        if self._region[source] != self._region[destination]:
            rate = min(rate, self.spec.wan)
        return rate

    def transfer_out(self, source: int, size: int, start: float) -> float:
        """Send ``size`` bytes from ``source`` to peers chosen later (a put's upload): books
        the sender's uplink only, at its full rate, plus a regional latency."""
        duration = size / self.spec.uplink
        uplink = self._up[source]
        begin = uplink.first_free(start, duration)
        uplink.book(begin, begin + duration, self._clock())
        self.bytes_moved += size
        return begin + duration + self.spec.latency_region

    def transfer(self, source: int, destination: int, size: int, start: float) -> float:
        """Send ``size`` bytes no earlier than ``start`` (>= the clock's time); returns when
        the last byte arrives, and books both ends' links for the transfer."""
        duration = size / self.bandwidth(source, destination)
        uplink = self._up[source]
        downlink = self._down[destination]
        begin = start
        while True:  # each pass moves past a booking of one end: it ends
            free_up = uplink.first_free(begin, duration)
            begin = downlink.first_free(free_up, duration)
            if begin == free_up:
                break
        now = self._clock()
        uplink.book(begin, begin + duration, now)
        downlink.book(begin, begin + duration, now)
        self.bytes_moved += size
        return begin + duration + self.latency(source, destination)
