"""Quantities in scenario files: durations, sizes and bandwidths written the way people write
them ("30d", "64MiB", "1Gbit/s"), read into seconds, bytes and bytes per second.

Why strings and not bare numbers: a scenario mixes seconds with months and bytes with
terabytes; "7d" cannot be misread, 604800 can.  Bare numbers are still accepted (seconds,
bytes, bytes per second).  Every parser raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import math
import re
from typing import Final

from p2pstore.errors import ConfigError

MINUTE: Final = 60.0
HOUR: Final = 3600.0
DAY: Final = 86400.0
MONTH: Final = 30 * DAY
"""A simulated month is 30 days (repair bytes per month use it)."""

_DURATION_UNITS: Final = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": MINUTE,
    "min": MINUTE,
    "h": HOUR,
    "d": DAY,
    "w": 7 * DAY,
    "mo": MONTH,
    "y": 365 * DAY,
}

_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}

_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def _split(text: str, key: str, what: str) -> tuple[float, str]:
    match = _NUMBER_UNIT.match(text)
    if match is None:
        raise ConfigError(f"{key}: {text!r} is not a {what} (write e.g. {_EXAMPLES[what]})")
    return float(match.group(1)), match.group(2).lower()


_EXAMPLES: Final = {
    "duration": '"90s", "15m", "6h", "30d", "2w"',
    "size": '"4096", "64MiB", "2TB"',
    "bandwidth": '"100MiB/s", "1Gbit/s", "125MB/s"',
}


def _number(value: object, key: str, what: str) -> float | None:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a {what}, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{key}: a {what} must be a finite number >= 0, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a {what} ({_EXAMPLES[what]}), got {value!r:.60}")
    return None


def parse_duration(value: object, key: str) -> float:
    """Seconds from a number of seconds or a string such as ``"6h"``.

    Raises :class:`ConfigError` naming ``key``."""
    number = _number(value, key, "duration")
    if number is not None:
        return number
    amount, unit = _split(str(value), key, "duration")
    if unit not in _DURATION_UNITS:
        raise ConfigError(
            f"{key}: unknown time unit {unit!r} in {value!r}; use one of "
            + ", ".join(_DURATION_UNITS)
        )
    return amount * _DURATION_UNITS[unit]


def parse_size(value: object, key: str) -> int:
    """Bytes from a number or a string such as ``"64MiB"`` (rounded to a whole byte).

    Raises :class:`ConfigError` naming ``key``."""
    number = _number(value, key, "size")
    if number is None:
        amount, unit = _split(str(value), key, "size")
        if unit not in _SIZE_UNITS:
            raise ConfigError(
                f"{key}: unknown size unit {unit!r} in {value!r}; use B, kB, MB, GB, TB, "
                "KiB, MiB, GiB or TiB"
            )
        number = amount * _SIZE_UNITS[unit]
    return round(number)


def parse_bandwidth(value: object, key: str) -> float:
    """Bytes per second from a number or a string such as ``"100MiB/s"`` or ``"1Gbit/s"``.

    Raises :class:`ConfigError` naming ``key`` (also for a bandwidth of zero)."""
    number = _number(value, key, "bandwidth")
    if number is None:
        text = str(value).strip()
        if not text.endswith("/s"):
            raise ConfigError(f"{key}: a bandwidth ends in /s, e.g. {_EXAMPLES['bandwidth']}")
        amount, unit = _split(text[:-2], key, "bandwidth")
        if unit.endswith("bit"):
            prefix = unit[: -len("bit")]
            scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}.get(prefix)
            if scale is None:
                raise ConfigError(f"{key}: unknown bit rate unit in {value!r}")
            number = amount * scale / 8
        elif unit in _SIZE_UNITS:
            number = amount * _SIZE_UNITS[unit]
        else:
            raise ConfigError(f"{key}: unknown bandwidth unit in {value!r}")
    if number <= 0:
        raise ConfigError(f"{key}: a bandwidth must be positive, got {value!r}")
    return number


def format_duration(seconds: float) -> str:
    """A short human form of a duration, for progress bars and plot labels."""
    for unit, scale in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        if seconds >= scale:
            return f"{seconds / scale:.1f}{unit}"
    return f"{seconds:.1f}s"
