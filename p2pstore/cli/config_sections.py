"""Sizes and the small service sections of node.toml (``[scrub]``, ``[gc]``), out of config.py.

Each reader takes the :class:`~p2pstore.cli.config.ConfigReader` of the file and returns the
settings the service takes; :class:`ConfigError` names the file, section and key.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from p2pstore.core.leases import DEFAULT_GRACE
from p2pstore.errors import ConfigError
from p2pstore.net.collection import CollectionSettings
from p2pstore.net.scrubber import ScrubSettings

if TYPE_CHECKING:
    from p2pstore.cli.config import ConfigReader

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes in "500 GiB", "2TB", "1048576"; :class:`ConfigError` says what was wrong."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(f'bad size {text!r}: expected a number and a unit, e.g. "500 GiB"')
    return int(float(match.group(1)) * _UNITS[unit])


def read_size(reader: ConfigReader, section: str, key: str) -> int | None:
    """A size of more than 0 bytes ("500 GiB", "2TB", "1048576"), or None if not given."""
    value = reader.string(section, key)
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ConfigError as exc:
        raise reader.error(f"[{section}] {key}", str(exc)) from exc
    if size <= 0:
        raise reader.error(f"[{section}] {key}", "must be more than 0 bytes")
    return size


def read_scrub(reader: ConfigReader) -> ScrubSettings:
    """``[scrub] interval`` (a duration > 0) and ``batch`` (a size > 0)."""
    defaults = ScrubSettings()
    return ScrubSettings(
        batch_bytes=read_size(reader, "scrub", "batch") or defaults.batch_bytes,
        interval=reader.interval("scrub", "interval", defaults.interval),
    )


def read_gc(reader: ConfigReader) -> CollectionSettings:
    """``[gc] enabled``, ``grace_period``, ``sweep_interval`` and ``lease`` (durations > 0)."""
    defaults = CollectionSettings()
    return CollectionSettings(
        grace_period=reader.interval("gc", "grace_period", DEFAULT_GRACE),
        sweep_interval=reader.interval("gc", "sweep_interval", defaults.sweep_interval),
        enabled=reader.boolean("gc", "enabled", defaults.enabled),
        initial_lease=reader.interval("gc", "lease", defaults.initial_lease),
    )
