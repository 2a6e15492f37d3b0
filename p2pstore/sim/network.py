"""Transfers without bytes: how long moving ``size`` bytes between two peers takes.

Strategy: a transfer costs one-way latency plus ``size`` over the link's bandwidth, the
smallest of the sender's uplink, the receiver's downlink and, across regions, the WAN cap.
Each peer's uplink and downlink carry one transfer at a time, first come first served: a
transfer starts when both ends are free.  That is the simplest model in which a repair storm
after a datacenter outage queues behind itself (which is what makes correlated failures
dangerous), and it costs two floats per peer.  Not modelled: TCP sharing a link between
concurrent flows, packet loss, congestion inside the network core.
"""

from __future__ import annotations

from p2pstore.sim.scenario import NetworkSpec


class Network:
    """Latency, bandwidth and the time each peer's uplink and downlink are busy until."""

    __slots__ = ("_datacenter", "_down_free", "_region", "_up_free", "bytes_moved", "spec")

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self._datacenter: list[int] = []
        self._region: list[int] = []
        self._up_free: list[float] = []
        self._down_free: list[float] = []
        self.bytes_moved = 0

    def add_peer(self, datacenter: int, region: int) -> None:
        """Register the next peer number with its datacenter and region indexes."""
        self._datacenter.append(datacenter)
        self._region.append(region)
        self._up_free.append(0.0)
        self._down_free.append(0.0)

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
        begin = max(start, self._up_free[source])
        done = begin + size / self.spec.uplink
        self._up_free[source] = done
        self.bytes_moved += size
        return done + self.spec.latency_region

    def transfer(self, source: int, destination: int, size: int, start: float) -> float:
        """Send ``size`` bytes no earlier than ``start``; returns when the last byte arrives
        and books both ends' links until then."""
        begin = max(start, self._up_free[source], self._down_free[destination])
        done = begin + size / self.bandwidth(source, destination)
        self._up_free[source] = done
        self._down_free[destination] = done
        self.bytes_moved += size
        return done + self.latency(source, destination)
