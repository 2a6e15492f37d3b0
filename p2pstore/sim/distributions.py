"""Random durations and sizes for scenarios: session lengths, downtimes, lifetimes, object sizes.

Why these families: measured peer session lengths are heavy-tailed (Weibull with shape < 1 and
Pareto fit P2P and host-availability traces far better than the exponential), while the
exponential is what the closed forms (binomial tail, Markov-chain MTTDL) assume; a lab that
offers all three can show how far the closed forms drift on realistic churn.  Every draw takes
the caller's ``random.Random``: each peer draws from its own child RNG, so a peer's history does
not depend on what other peers did (and two sweep points with the same seed and churn see the
same peer histories: common random numbers).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from p2pstore.errors import ConfigError

KINDS: Final = ("fixed", "exponential", "weibull", "pareto", "uniform", "lognormal")


@dataclass(frozen=True, slots=True)
class Distribution:
    """One distribution in base units (seconds or bytes).

    ``fixed``: ``a`` always.  ``exponential``: mean ``a``.  ``weibull``: shape ``a``, scale
    ``b``.  ``pareto``: shape ``a``, scale (minimum) ``b``.  ``uniform``: on ``[a, b]``.
    ``lognormal``: median ``a``, sigma ``b`` (of the log).  Raises :class:`ConfigError`.
    """

    kind: str
    a: float
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown distribution {self.kind!r}; use one of {', '.join(KINDS)}")
        if not (math.isfinite(self.a) and math.isfinite(self.b)) or self.a < 0 or self.b < 0:
            raise ConfigError(f"{self.kind} distribution: parameters must be finite and >= 0")
        positive = {
            "exponential": (self.a,),
            "weibull": (self.a, self.b),
            "pareto": (self.a, self.b),
            "lognormal": (self.a,),
        }.get(self.kind, ())
        if any(value <= 0 for value in positive):
            raise ConfigError(f"{self.kind} distribution: parameters must be positive")
        if self.kind == "uniform" and self.b < self.a:
            raise ConfigError("uniform distribution: need low <= high")

    def sample(self, rng: random.Random) -> float:
        """One draw from ``rng``."""
        kind = self.kind
        if kind == "exponential":
            return rng.expovariate(1.0 / self.a)
        if kind == "fixed":
            return self.a
        if kind == "weibull":
            return rng.weibullvariate(self.b, self.a)
        if kind == "pareto":
            return self.b * rng.paretovariate(self.a)
        if kind == "uniform":
            return rng.uniform(self.a, self.b)
        return rng.lognormvariate(math.log(self.a), self.b)

    @property
    def mean(self) -> float:
        """The mean (``inf`` for a Pareto with shape <= 1)."""
        if self.kind in {"fixed", "exponential"}:
            return self.a
        if self.kind == "weibull":
            return self.b * math.gamma(1 + 1 / self.a)
        if self.kind == "pareto":
            return math.inf if self.a <= 1 else self.a * self.b / (self.a - 1)
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return self.a * math.exp(self.b**2 / 2)

    def describe(self) -> str:
        """A short form for summaries, e.g. ``weibull(shape=0.5, scale=86400)``."""
        names = {
            "fixed": ("value",),
            "exponential": ("mean",),
            "weibull": ("shape", "scale"),
            "pareto": ("shape", "scale"),
            "uniform": ("low", "high"),
            "lognormal": ("median", "sigma"),
        }[self.kind]
        values = (self.a, self.b)
        return (
            f"{self.kind}("
            + ", ".join(f"{n}={v:g}" for n, v in zip(names, values, strict=False))
            + ")"
        )


Parser = Callable[[object, str], float]


def parse_distribution(value: object, key: str, parse: Parser) -> Distribution:
    """A distribution from a scenario value: a bare quantity (fixed) or a table such as
    ``{dist = "weibull", shape = 0.5, scale = "2d"}``.  ``parse`` reads quantities in the
    right unit (durations or sizes); shapes and sigmas are plain numbers.

    Raises :class:`ConfigError` naming ``key`` and what is wrong."""
    if not isinstance(value, Mapping):
        return Distribution("fixed", parse(value, key))
    table = dict(value)
    kind = table.pop("dist", None)
    if not isinstance(kind, str):
        raise ConfigError(f"{key}: a distribution table needs dist = one of {', '.join(KINDS)}")
    fields = {
        "fixed": (("value", parse), None),
        "exponential": (("mean", parse), None),
        "weibull": (("shape", _plain), ("scale", parse)),
        "pareto": (("shape", _plain), ("scale", parse)),
        "uniform": (("low", parse), ("high", parse)),
        "lognormal": (("median", parse), ("sigma", _plain)),
    }.get(kind)
    if fields is None:
        raise ConfigError(f"{key}: unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    params = []
    for field in fields:
        if field is None:
            params.append(0.0)
            continue
        name, read = field
        if name not in table:
            raise ConfigError(f"{key}: a {kind} distribution needs {name!r}")
        params.append(read(table.pop(name), f"{key}.{name}"))
    if table:
        raise ConfigError(f"{key}: unknown keys for {kind}: {', '.join(sorted(table))}")
    return Distribution(kind, params[0], params[1])


def _plain(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a plain number, got {value!r:.40}")
    return float(value)
