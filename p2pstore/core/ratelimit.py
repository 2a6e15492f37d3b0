"""Token buckets: how much of a costly service one identity may use, and when it may ask again.

Strategy: a bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second.  A request
costing ``c`` is served when the tokens are there, else refused with the exact wait after which
it would be, so a refusal can tell the peer when to retry.  A cost above ``burst`` is served
once the bucket is full and leaves it in debt, so no request is refused forever.  Costs known
only after serving (the bytes of a fragment read) are charged afterwards with :meth:`charge`,
which may also leave the bucket in debt: nothing more is served until it is paid back.  Time is
an argument, so the same buckets run under trio's clock, a MockClock or the simulator.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

ROUNDING = 1e-9
"""Share of the burst forgiven, so a request made again after exactly the wait it was told is
served despite floating-point rounding."""


class TokenBucket:
    """Up to ``burst`` tokens, refilled at ``rate`` per second; starts full at ``now``."""

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if not (burst > 0 and math.isfinite(burst)):
            raise ValueError(f"burst must be a positive number, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (negative while in debt)."""
        self._refill(now)
        return self._tokens

    def full(self, now: float) -> bool:
        """True when the bucket is as good as a new one (it may then be forgotten)."""
        return self.level(now) >= self.burst

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens and return 0.0, or take nothing and return the seconds after
        which the same request would be served."""
        if cost < 0:
            raise ValueError(f"cost must not be negative, got {cost!r}")
        self._refill(now)
        needed = min(cost, self.burst)
        if self._tokens >= needed - ROUNDING * self.burst:  # asking again after the wait works
            self._tokens -= cost
            return 0.0
        return (needed - self._tokens) / self.rate

    def charge(self, cost: float, now: float) -> None:
        """Take ``cost`` tokens whatever the level: the bucket may go into debt."""
        if cost < 0:
            raise ValueError(f"cost must not be negative, got {cost!r}")
        self._refill(now)
        self._tokens -= cost

    def refund(self, cost: float, now: float) -> None:
        """Give back ``cost`` tokens taken for something that turned out free (never above
        ``burst``)."""
        if cost < 0:
            raise ValueError(f"cost must not be negative, got {cost!r}")
        self._refill(now)
        self._tokens = min(self.burst, self._tokens + cost)

    def _refill(self, now: float) -> None:
        if now > self._updated:  # a clock that steps back refills nothing
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now


class RateLimiter:
    """One :class:`TokenBucket` per key (a peer's node id), at most ``max_keys`` remembered.

    When a new key finds no room, full buckets are forgotten first (a full bucket is the same
    as a new one), then the least recently used: forgetting can only forgive, so a peer needs
    more than ``max_keys`` identities to gain anything from it.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, *, max_keys: int = 4096) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        TokenBucket(rate, burst, 0.0)  # validates rate and burst
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, cost: float, now: float) -> float:
        """:meth:`TokenBucket.take` on ``key``'s bucket."""
        return self._bucket(key, now).take(cost, now)

    def charge(self, key: Hashable, cost: float, now: float) -> None:
        """:meth:`TokenBucket.charge` on ``key``'s bucket."""
        self._bucket(key, now).charge(cost, now)

    def refund(self, key: Hashable, cost: float, now: float) -> None:
        """:meth:`TokenBucket.refund` on ``key``'s bucket (a forgotten one is full already)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.refund(cost, now)

    def level(self, key: Hashable, now: float) -> float:
        bucket = self._buckets.get(key)
        return self.burst if bucket is None else bucket.level(now)

    def _bucket(self, key: Hashable, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets.move_to_end(key)
            return bucket
        if len(self._buckets) >= self.max_keys:
            for old in [k for k, b in self._buckets.items() if b.full(now)]:
                del self._buckets[old]
            while len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
        bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket
