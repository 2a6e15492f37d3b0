"""Coding rules: how an object is coded and where its fragments may go.

Why named rules instead of bare k and n: an institution chooses a policy ("keep it in FR-GES,
survive the loss of any two datacenters"), not numbers, and the mesh must apply the same policy
at put, at repair and in the simulator.  A rule's name is written into every manifest, so a
steward repairing an object years later applies the rule the owner chose.

The shipped rules, with what they cost and survive (n/k is the storage overhead; with at most
one fragment of a chunk per datacenter, a chunk survives the loss of any ``n - k`` datacenters):

=========  =======  ========  ========  =========  =====  ==========================================
rule       k-of-n   overhead  survives  repair at  grace  use
=========  =======  ========  ========  =========  =====  ==========================================
standard   4-of-8   2.0x      4 DCs     5 live     1h     the default: 2x storage, 4 failure domains
archive    6-of-14  2.33x     8 DCs     8 live     6h     long-term data: rare repairs, wide margin
replica-3  1-of-3   3.0x      2 DCs     1 live     1h     plain replication, to compare against
=========  =======  ========  ========  =========  =====  ==========================================

"repair at": a chunk is repaired once fewer than ``repair_threshold`` of its fragments are live
(a silent holder's counting as lost only after the grace period); when repair starts the chunk
can still lose ``repair_threshold - 1 - k`` more and be read (1, 2 and 0 above).

A mesh declares its own rules in the ``[rules.NAME]`` tables of every node's and client's TOML
file (:func:`rules_from_table`); they are laid over the shipped ones, a declared rule replacing
a shipped rule of the same name.  Every member must declare the same rules: a steward repairs
by the rule name written in the manifest, and refuses to repair under a rule it does not know.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from p2pstore.errors import ConfigError, IdentityError
from p2pstore.identity import validate_region

MAX_SHARES: Final = 256
"""zfec's limit on n."""

RULE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""What a rule may be called: the same as a manifest's rule field accepts."""


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
        if not isinstance(self.name, str) or not RULE_NAME.fullmatch(self.name):
            raise ConfigError(
                f"{where}: a rule name is 1-64 characters from A-Z a-z 0-9 . _ -, "
                "starting with a letter or digit"
            )
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
        if not (math.isfinite(self.grace_period) and self.grace_period >= 0):
            raise ConfigError(f"{where}: grace_period must be a finite number of seconds >= 0")

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


RULE_KEYS: Final = (
    "k",
    "n",
    "repair_threshold",
    "regions",
    "max_per_datacenter",
    "grace_period",
)
"""The keys of a ``[rules.NAME]`` table."""

_DURATION_UNITS: Final = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds (``3600``) or a string with a unit (``"1h"``,
    ``"30m"``, ``"90s"``, ``"2d"``).  Raises :class:`ConfigError` saying what was wrong (the
    caller adds where)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        unit = match.group(2)
        if unit not in _DURATION_UNITS:
            raise ConfigError(
                f'unknown time unit {unit!r} in {value!r}; use s, m, h or d (e.g. "30m")'
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    else:
        raise ConfigError(
            f'expected seconds or a duration such as "30m", "1h", "2d", got {value!r}'
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"expected a finite duration >= 0, got {value!r}")
    return seconds


def rules_from_table(table: Mapping[str, object], *, source: str) -> dict[str, CodingRule]:
    """The shipped rules overlaid with those declared in ``table``, the content of a TOML
    file's ``[rules]`` table (``{NAME: {k = .., n = .., ...}}``); ``source`` names the file in
    errors.

    A declared rule with a shipped name replaces the shipped one; keys it leaves out keep the
    shipped values, except that ``repair_threshold`` must be given again when k or n change.
    A new rule must give ``k``, ``n`` and ``repair_threshold``; ``regions`` defaults to
    anywhere, ``max_per_datacenter`` to 1, ``grace_period`` to an hour.
    Raises :class:`ConfigError` naming ``source``, the rule and the key.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [rules]: must be a table of [rules.NAME] tables")
    rules = dict(SHIPPED_RULES)
    for name, fields in table.items():
        rules[name] = _declared_rule(name, fields, source)
    return rules


def rule_table(rule: CodingRule) -> dict[str, object]:
    """``rule`` as the fields of a ``[rules.NAME]`` table (what :func:`rules_from_table`
    reads back to an equal rule)."""
    return {
        "k": rule.k,
        "n": rule.n,
        "repair_threshold": rule.repair_threshold,
        "regions": sorted(rule.regions),
        "max_per_datacenter": rule.max_per_datacenter,
        "grace_period": rule.grace_period,
    }


def rule_table_header(name: str) -> str:
    """``[rules.NAME]``, with NAME quoted when TOML needs it."""
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None
    return f"[rules.{name}]" if bare else f'[rules."{name}"]'


class _RuleFields:
    """One ``[rules.NAME]`` table being read: typed access whose errors name file, rule, key."""

    def __init__(self, name: str, fields: Mapping[str, object], source: str) -> None:
        self.fields = fields
        self.where = f"{source}: {rule_table_header(name)}"
        self.shipped = SHIPPED_RULES.get(name)

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where} {key}: {problem}")

    def integer(self, key: str, low: int, high: int, bounds: str, default: int | None) -> int:
        if key not in self.fields:
            if default is None:
                raise self.error(key, "is required: a new rule gives k, n and repair_threshold")
            return default
        value = self.fields[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"expected a whole number, got {value!r}")
        if not low <= value <= high:
            raise self.error(key, f"must be between {bounds}, got {value}")
        return value


def _declared_rule(name: object, fields: object, source: str) -> CodingRule:
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        raise ConfigError(
            f"{source}: {rule_table_header(str(name))}: bad rule name {name!r}: use 1-64 "
            "characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    if not isinstance(fields, Mapping):
        raise ConfigError(
            f"{source}: {rule_table_header(name)}: must be a table with the keys "
            f"{', '.join(RULE_KEYS)}, got {fields!r}"
        )
    read = _RuleFields(name, fields, source)
    _refuse_unknown(read)
    base = read.shipped
    k = read.integer("k", 1, MAX_SHARES, f"1 and {MAX_SHARES}", base.k if base else None)
    n = read.integer("n", k, MAX_SHARES, f"k={k} and {MAX_SHARES}", base.n if base else None)
    if base is not None and (k, n) != (base.k, base.n) and "repair_threshold" not in fields:
        raise read.error(
            "repair_threshold",
            f"is required when k or n differ from the shipped rule {name}'s {base.k}-of-{base.n}",
        )
    threshold = read.integer(
        "repair_threshold", k, n, f"k={k} and n={n}", base.repair_threshold if base else None
    )
    most = read.integer(
        "max_per_datacenter", 1, MAX_SHARES, f"1 and {MAX_SHARES}",
        base.max_per_datacenter if base else 1,
    )  # fmt: skip
    return CodingRule(
        name,
        k=k,
        n=n,
        repair_threshold=threshold,
        regions=_regions(read, base.regions if base else frozenset()),
        max_per_datacenter=most,
        grace_period=_grace_period(read, base.grace_period if base else 3600.0),
    )


def _refuse_unknown(read: _RuleFields) -> None:
    unknown = [key for key in read.fields if key not in RULE_KEYS]
    if not unknown:
        return
    hints = [m[0] for key in unknown if (m := difflib.get_close_matches(key, RULE_KEYS, n=1))]
    hint = f"did you mean {', '.join(repr(h) for h in hints)}? " if hints else ""
    raise read.error(
        ", ".join(unknown),
        f"unknown key{'s' if len(unknown) > 1 else ''}; {hint}(a rule's keys: "
        f"{', '.join(RULE_KEYS)})",
    )


def _regions(read: _RuleFields, default: frozenset[str]) -> frozenset[str]:
    if "regions" not in read.fields:
        return default
    value = read.fields["regions"]
    if not isinstance(value, list) or not all(isinstance(region, str) for region in value):
        raise read.error(
            "regions", f'expected a list of region codes such as ["FR-GES"], got {value!r}'
        )
    for index, region in enumerate(value):
        try:
            validate_region(region)
        except IdentityError as exc:
            raise read.error(f"regions[{index}]", str(exc)) from exc
    return frozenset(value)


def _grace_period(read: _RuleFields, default: float) -> float:
    if "grace_period" not in read.fields:
        return default
    try:
        return parse_duration(read.fields["grace_period"])
    except ConfigError as exc:
        raise read.error("grace_period", str(exc)) from exc
