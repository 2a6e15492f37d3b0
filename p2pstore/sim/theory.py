"""Closed forms the simulator is checked against, and the statistics to compare with them.

* **Binomial tail.**  Without repair, a k-of-n chunk whose fragments are each lost
  independently with probability ``p`` over a period survives it with probability
  ``P[Binomial(n, 1 - p) >= k]`` -- the quantity behind Weatherspoon and Kubiatowicz's
  comparison of erasure coding and replication at equal storage.
* **Birth-death MTTDL.**  With fragments failing independently at rate ``lam`` and lost
  fragments repaired at rate ``mu_i`` in state ``i`` (live fragments), the mean time from ``n``
  live fragments to ``k - 1`` is ``sum_{i=k}^{n} D_i`` with ``D_n = 1 / (n lam)`` and
  ``D_i = (1 + mu_i D_{i+1}) / (i lam)``: ``D_i`` is the mean time to first fall from ``i`` to
  ``i - 1``.  With ``n = 2, k = 1`` and one repair at rate ``mu`` this is the classic mirrored
  pair's ``(3 lam + mu) / (2 lam^2)``.  Independent repairs of every lost fragment
  (``mu_i = (n - i) mu``) are what the simulator's per-holder detection produces.
* **Lazy repair, Monte Carlo.**  A chunk whose fragments fail independently at ``lam`` and
  that is repaired, at once, when its live fragments fall to ``repair_at``: the repair takes a
  drawn time, rebuilds the fragments missing when it started (each on a new holder that fails
  at ``lam`` from then on, so it lands only if that holder lasted), and the chunk is checked
  again when it lands.  The chunk is lost when fewer than k fragments exist.  No closed form
  covers a fixed repair time; :func:`lazy_repair_losses` runs the chain chunk by chunk.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence

from p2pstore.errors import ConfigError

Z_99 = 2.5758293035489004
"""Two-sided 99% quantile of the standard normal."""


def binomial_survival(k: int, n: int, loss_probability: float) -> float:
    """P[at least k of n fragments survive], each lost independently with the probability."""
    if not (1 <= k <= n and 0 <= loss_probability <= 1):
        raise ConfigError(f"need 1 <= k <= n and 0 <= p <= 1, got k={k} n={n} p={loss_probability}")
    keep = 1 - loss_probability
    return sum(math.comb(n, i) * keep**i * loss_probability ** (n - i) for i in range(k, n + 1))


def mttdl_birth_death(
    k: int, n: int, failure_rate: float, repair_rate: Callable[[int], float]
) -> float:
    """Mean time from n live fragments to fewer than k, fragments failing at
    ``failure_rate`` each and repairs at ``repair_rate(i)`` in state ``i`` (see above)."""
    if not (1 <= k <= n) or failure_rate <= 0:
        raise ConfigError(f"need 1 <= k <= n and a positive failure rate, got k={k} n={n}")
    total = 0.0
    down = 1.0 / (n * failure_rate)
    total += down
    for state in range(n - 1, k - 1, -1):
        down = (1.0 + repair_rate(state) * down) / (state * failure_rate)
        total += down
    return total


def independent_repairs(n: int, rate: float) -> Callable[[int], float]:
    """``mu_i = (n - i) * rate``: every lost fragment repaired on its own at ``rate``."""
    return lambda state: (n - state) * rate


def proportion_interval(successes: int, trials: int, z: float = Z_99) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ConfigError(f"need 0 <= successes <= trials > 0, got {successes}/{trials}")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials**2)) / (1 + z * z / trials)
    return centre - half, centre + half


def mean_interval(values: Sequence[float], z: float = Z_99) -> tuple[float, float]:
    """Normal-approximation interval for the mean of i.i.d. ``values`` (at least two)."""
    if len(values) < 2:
        raise ConfigError("a confidence interval for a mean needs at least two values")
    centre = statistics.fmean(values)
    half = z * statistics.stdev(values) / math.sqrt(len(values))
    return centre - half, centre + half


def lazy_repair_losses(
    k: int,
    n: int,
    repair_at: int,
    *,
    failure_rate: float,
    repair_time: Callable[[random.Random], float],
    horizon: float,
    chunks: int,
    rng: random.Random,
) -> int:
    """How many of ``chunks`` independent chunks the lazy chain above loses within
    ``horizon`` (time in the unit of ``1 / failure_rate``); ``repair_time`` draws one repair's
    duration.  Raises :class:`ConfigError` for parameters outside ``k <= repair_at < n``."""
    if not (1 <= k <= repair_at < n) or failure_rate <= 0 or horizon <= 0 or chunks < 0:
        raise ConfigError(f"need 1 <= k <= repair_at < n, got k={k} repair_at={repair_at} n={n}")
    expovariate = rng.expovariate
    lost = 0
    for _ in range(chunks):
        now = 0.0
        live = n
        lands = math.inf  # when the repair in flight lands
        rebuilt = 0  # fragments it brings (their holders lasted until it lands)
        while True:
            failure = now + expovariate(live * failure_rate)
            if lands <= failure:
                if lands >= horizon:
                    break
                now = lands
                live += rebuilt
                lands = math.inf
            else:
                if failure >= horizon:
                    break
                now = failure
                live -= 1
                if live < k:
                    lost += 1
                    break
            if live <= repair_at and lands == math.inf:
                duration = repair_time(rng)
                lands = now + duration
                rebuilt = sum(expovariate(failure_rate) > duration for _ in range(n - live))
    return lost
