"""Coding rules: how an object is coded and where its fragments may go.

Why named rules instead of bare k and n: an institution chooses a policy ("keep it in FR-GES,
survive the loss of any two datacenters"), not numbers, and the mesh must apply the same policy
at put, at repair and in the simulator.  A rule's name is written into every manifest, so a
steward repairing an object years later applies the rule the owner chose.

The shipped rules, with what they cost and survive (n/k is the storage overhead; with at most
one fragment of a chunk per datacenter, a chunk survives the loss of any ``n - k`` datacenters):

========== ===== ========= ========== =================================================
rule       k-of-n overhead  survives   use
========== ===== ========= ========== =================================================
standard   4-of-8   2.0x    4 DCs      the default: 2x storage, four failure domains
archive    6-of-14  2.33x   8 DCs      long-term data repaired rarely (lazy, wide margin)
replica-3  1-of-3   3.0x    2 DCs      plain replication, to compare against
========== ===== ========= ========== =================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from p2pstore.errors import ConfigError

MAX_SHARES: Final = 256
"""zfec's limit on n."""


@dataclass(frozen=True, slots=True)
class CodingRule:
    """A named placement and coding policy.

    ``repair_threshold``: repair a chunk when fewer of its fragments are live (k <= t <= n).
    ``regions``: where fragments may be stored (empty: anywhere in the mesh).
    ``max_per_datacenter``: most fragments of one chunk a datacenter may hold.
    ``grace_period``: seconds a silent holder is given before its fragments count as lost.
    Raises :class:`ConfigError` naming the bad field.
    """

    name: str
    k: int
    n: int
    repair_threshold: int
    regions: frozenset[str] = field(default_factory=frozenset)
    max_per_datacenter: int = 1
    grace_period: float = 3600.0

    def __post_init__(self) -> None:
        where = f"coding rule {self.name!r}"
        if not (1 <= self.k <= self.n <= MAX_SHARES):
            raise ConfigError(
                f"{where}: need 1 <= k <= n <= {MAX_SHARES}, got k={self.k} n={self.n}"
            )
        if not self.k <= self.repair_threshold <= self.n:
            raise ConfigError(
                f"{where}: repair_threshold must be between k={self.k} and n={self.n}, "
                f"got {self.repair_threshold}"
            )
        if self.max_per_datacenter < 1:
            raise ConfigError(f"{where}: max_per_datacenter must be at least 1")
        if self.grace_period < 0:
            raise ConfigError(f"{where}: grace_period cannot be negative")

    @property
    def datacenters_needed(self) -> int:
        """The fewest datacenters that can hold one chunk's n fragments under this rule."""
        return -(-self.n // self.max_per_datacenter)

    def allows_region(self, region: str) -> bool:
        """Whether a fragment of this rule may be stored in ``region``."""
        return not self.regions or region in self.regions

    def describe_regions(self) -> str:
        """The allowed territory, for messages."""
        return ", ".join(sorted(self.regions)) if self.regions else "any region"


DEFAULT_RULE_NAME: Final = "standard"

SHIPPED_RULES: Final[Mapping[str, CodingRule]] = {
    rule.name: rule
    for rule in (
        CodingRule("standard", k=4, n=8, repair_threshold=6),
        CodingRule("archive", k=6, n=14, repair_threshold=9, grace_period=6 * 3600.0),
        CodingRule("replica-3", k=1, n=3, repair_threshold=2),
    )
}


def find_rule(name: str, rules: Mapping[str, CodingRule] = SHIPPED_RULES) -> CodingRule:
    """The rule called ``name``; :class:`ConfigError` lists the known ones otherwise."""
    try:
        return rules[name]
    except KeyError:
        known = ", ".join(sorted(rules))
        raise ConfigError(f"no coding rule named {name!r}; known rules: {known}") from None
