"""The node's TOML configuration, validated so that every error names the bad key.

Relative paths in the file are relative to the file itself, so a node's directory can be moved
or copied whole.  Unknown keys are errors (with a "did you mean" hint): a typo in a config must
never silently fall back to a default.  The mesh's coding rules are ``[rules.NAME]`` tables,
read by :func:`p2pstore.core.rules.rules_from_table` for nodes and clients alike.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pstore.cli.config_sections import parse_size, read_gc, read_scrub, read_size
from p2pstore.cli.limits import LIMIT_KEYS, Limits
from p2pstore.cli.seeds import Seed, load_seed_file
from p2pstore.core.audit import AuditSettings
from p2pstore.core.rules import (
    SHIPPED_RULES,
    CodingRule,
    parse_duration,
    rules_from_table,
)
from p2pstore.errors import ConfigError
from p2pstore.net.address import parse_address
from p2pstore.net.collection import CollectionSettings
from p2pstore.net.scrubber import ScrubSettings

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
RULES_SECTION = "rules"
"""The section of ``[rules.NAME]`` tables: its keys are rule names, not a fixed schema."""
DEFAULT_CHECK_INTERVAL = 600.0
DEFAULT_TRUST_REFRESH = 300.0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything ``p2pstore node run`` needs, resolved and checked."""

    def join_through(self) -> tuple[Seed, ...]:
        """Whom to join the mesh through: ``[bootstrap] peers``, then the seed file's seeds."""
        return tuple(Seed(address) for address in self.bootstrap_peers) + self.seeds

    path: Path
    listen: str
    advertise: str | None
    data_dir: Path
    key: Path
    certificate: Path
    ca_certificate: Path
    revocation_list: Path | None
    bootstrap_peers: tuple[str, ...]
    seeds: tuple[Seed, ...]
    quota_bytes: int | None
    log_level: str
    log_format: str
    metrics_listen: str | None = None
    """Where the admin endpoint (/metrics, /health, /status) listens; None: it is off."""
    metrics_allow_public: bool = False
    rules: Mapping[str, CodingRule] = field(default_factory=lambda: dict(SHIPPED_RULES))
    """The mesh's coding rules by name: the shipped ones overlaid with ``[rules.NAME]``."""
    repair_check_interval: float = DEFAULT_CHECK_INTERVAL
    """``[repair] check_interval``: seconds between a steward's rounds of checks."""
    audits: AuditSettings = field(default_factory=AuditSettings)
    """``[repair] audit_*``: how often stewards audit the holders of their objects."""
    limits: Limits = field(default_factory=Limits)
    """``[limits]``: per-peer and per-node bounds."""
    scrub: ScrubSettings = field(default_factory=ScrubSettings)
    """``[scrub] interval`` and ``batch``: the pace of re-verifying the store."""
    gc: CollectionSettings = field(default_factory=CollectionSettings)
    """``[gc]``: the undo window before lapsed fragments are freed, the pace of sweeps."""
    fragment_bytes_per_identity: IdentityShare = field(
        default_factory=lambda: IdentityShare(fraction=DEFAULT_IDENTITY_SHARE)
    )
    """``[limits] fragment_bytes_per_identity``: what one uploading identity may store here."""
    trust_refresh: float = DEFAULT_TRUST_REFRESH
    """``[identity] trust_refresh``: seconds between fetches of the CA's records from the DHT."""
    require_fresh_revocation_list: bool = False
    """``[identity]``: refuse to start when the ``revocation_list`` file is past its next update."""


DEFAULT_IDENTITY_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class IdentityShare:
    """Fragment bytes one uploading identity may store on a node: ``size`` bytes, or else
    ``fraction`` of the store's quota."""

    size: int | None = None
    fraction: float = DEFAULT_IDENTITY_SHARE

    def of(self, quota_bytes: int) -> int:
        """The bytes this share allows in a store of ``quota_bytes``."""
        return self.size if self.size is not None else int(quota_bytes * self.fraction)


_SCHEMA: dict[str, dict[str, bool]] = {
    # section -> key -> required
    "node": {"listen": True, "advertise": False, "data_dir": True},
    "identity": dict.fromkeys(("key", "certificate", "ca_certificate"), True)
    | dict.fromkeys(("revocation_list", "trust_refresh", "require_fresh_revocation_list"), False),
    "bootstrap": {"peers": False, "seed_file": False},
    "store": {"quota": False},
    "log": {"level": False, "format": False},
    "metrics": {"listen": False, "allow_public": False},
    "repair": {
        "check_interval": False,
        "audit_fraction_per_day": False,
        "audits_per_holder_per_hour": False,
        "audit_timeout": False,
    },
    "scrub": {"interval": False, "batch": False},
    "gc": {"enabled": False, "grace_period": False, "sweep_interval": False, "lease": False},
    "limits": {**dict.fromkeys(LIMIT_KEYS, False), "fragment_bytes_per_identity": False},
}


class ConfigReader:
    """Typed access to a parsed TOML document whose sections and keys follow ``schema``; the
    ``[rules]`` section, whose keys are rule names, is read by :meth:`rules`."""

    def __init__(
        self,
        path: Path,
        document: Mapping[str, Any],
        schema: Mapping[str, Mapping[str, bool]] | None = None,
    ) -> None:
        self.path = path
        self.document = document
        self.schema = _SCHEMA if schema is None else schema
        self._check_known(document, {**self.schema, RULES_SECTION: {}}, "")
        for section, keys in self.schema.items():
            value = document.get(section, {})
            if not isinstance(value, dict):
                raise self.error(f"[{section}]", "must be a table")
            self._check_known(value, keys, section)

    def error(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {problem}")

    def _check_known(
        self, table: Mapping[str, Any], known: Mapping[str, Any], section: str
    ) -> None:
        for key in table:
            if key not in known:
                hint = difflib.get_close_matches(key, list(known), n=1)
                where = f"[{section}] {key}" if section else f"[{key}]"
                suffix = f"; did you mean {hint[0]!r}?" if hint else ""
                raise self.error(where, f"unknown key{suffix}")

    def get(self, section: str, key: str) -> Any:
        table = self.document.get(section, {})
        if key not in table:
            if self.schema[section][key]:
                raise self.error(f"[{section}] {key}", "is required")
            return None
        return table[key]

    def string(self, section: str, key: str) -> str | None:
        value = self.get(section, key)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.error(f"[{section}] {key}", f"expected a non-empty string, got {value!r}")
        return value

    def address(self, section: str, key: str, *, dialable: bool = False) -> str | None:
        value = self.string(section, key)
        if value is not None:
            try:
                _host, port = parse_address(value)
            except ConfigError as exc:
                raise self.error(f"[{section}] {key}", str(exc)) from exc
            if dialable and port == 0:
                raise self.error(f"[{section}] {key}", f"{value!r}: port 0 cannot be dialled")
        return value

    def path_value(self, section: str, key: str) -> Path | None:
        value = self.string(section, key)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.path.parent / path)

    def existing_file(self, section: str, key: str) -> Path | None:
        path = self.path_value(section, key)
        if path is not None and not path.is_file():
            raise self.error(f"[{section}] {key}", f"no such file: {path}")
        return path

    def boolean(self, section: str, key: str, default: bool) -> bool:
        value = self.get(section, key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(f"[{section}] {key}", f"expected true or false, got {value!r}")
        return value

    def interval(self, section: str, key: str, default: float) -> float:
        """A duration of more than 0 seconds: a number of seconds or e.g. ``"10m"``."""
        value = self.get(section, key)
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ConfigError as exc:
            raise self.error(f"[{section}] {key}", str(exc)) from exc
        if seconds <= 0:
            raise self.error(f"[{section}] {key}", f"must be more than 0 seconds, got {value!r}")
        return seconds

    def rules(self) -> dict[str, CodingRule]:
        """The shipped coding rules overlaid with the file's ``[rules.NAME]`` tables."""
        return rules_from_table(self.document.get(RULES_SECTION, {}), source=str(self.path))

    def choice(self, section: str, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(section, key)
        if value is None:
            return default
        if value not in choices:
            raise self.error(
                f"[{section}] {key}", f"expected one of {', '.join(choices)}, got {value!r}"
            )
        return value


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's document; :class:`ConfigError` says why it cannot be read."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}): save the file as UTF-8"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return document


def load_node_config(path: Path) -> NodeConfig:
    """Read and check a node's TOML file; :class:`ConfigError` names the file and the key."""
    reader = ConfigReader(path, read_toml(path))
    peers = bootstrap_peers(reader)
    listen = reader.address("node", "listen")
    data_dir = reader.path_value("node", "data_dir")
    key = reader.existing_file("identity", "key")
    certificate = reader.existing_file("identity", "certificate")
    ca_certificate = reader.existing_file("identity", "ca_certificate")
    assert listen and data_dir and key and certificate and ca_certificate  # required keys
    return NodeConfig(
        path=path,
        listen=listen,
        advertise=reader.address("node", "advertise", dialable=True),
        data_dir=data_dir,
        key=key,
        certificate=certificate,
        ca_certificate=ca_certificate,
        revocation_list=reader.existing_file("identity", "revocation_list"),
        bootstrap_peers=peers,
        seeds=seeds_of(reader),
        quota_bytes=read_size(reader, "store", "quota"),
        log_level=reader.choice("log", "level", LOG_LEVELS, "info"),
        log_format=reader.choice("log", "format", LOG_FORMATS, "text"),
        metrics_listen=_metrics_listen(reader),
        metrics_allow_public=reader.boolean("metrics", "allow_public", False),
        rules=reader.rules(),
        repair_check_interval=reader.interval("repair", "check_interval", DEFAULT_CHECK_INTERVAL),
        audits=read_audits(reader),
        fragment_bytes_per_identity=_identity_share(reader),
        limits=read_limits(reader),
        scrub=read_scrub(reader),
        trust_refresh=reader.interval("identity", "trust_refresh", DEFAULT_TRUST_REFRESH),
        require_fresh_revocation_list=reader.boolean(
            "identity", "require_fresh_revocation_list", False
        ),
        gc=read_gc(reader),
    )


def read_audits(reader: ConfigReader) -> AuditSettings:
    """``[repair] audit_fraction_per_day`` (0 to 1), ``audits_per_holder_per_hour`` (>= 0;
    both 0 turn audits off) and ``audit_timeout`` (a duration > 0)."""
    defaults = AuditSettings()

    def number(key: str, default: float, most: float) -> float:
        value = reader.get("repair", key)
        if value is None:
            return default
        if type(value) not in (int, float) or not 0 <= value <= most:
            raise reader.error(
                f"[repair] {key}", f"expected a number from 0 to {most:g}, got {value!r}"
            )
        return float(value)

    return AuditSettings(
        fraction_per_day=number("audit_fraction_per_day", defaults.fraction_per_day, 1.0),
        min_per_holder_per_hour=number(
            "audits_per_holder_per_hour", defaults.min_per_holder_per_hour, 3600.0
        ),
        answer_timeout=reader.interval("repair", "audit_timeout", defaults.answer_timeout),
    )


def read_limits(reader: ConfigReader) -> Limits:
    """``[limits]``; every key is optional and checked (counts >= 1, rates and sizes > 0)."""

    def count(key: str) -> int | None:
        value = reader.get("limits", key)
        if value is not None and (type(value) is not int or value < 1):
            raise reader.error(f"[limits] {key}", f"expected a whole number >= 1, got {value!r}")
        return value

    def number(key: str) -> float | None:
        value = reader.get("limits", key)
        if value is not None and (type(value) not in (int, float) or not value > 0):
            raise reader.error(f"[limits] {key}", f"expected a number > 0, got {value!r}")
        return None if value is None else float(value)

    def size(key: str) -> int | None:
        value = reader.get("limits", key)
        if value is None or (type(value) is int and value > 0):
            return value
        try:
            parsed = parse_size(value) if isinstance(value, str) else 0
        except ConfigError as exc:
            raise reader.error(f"[limits] {key}", str(exc)) from exc
        if parsed <= 0:
            problem = f'expected a size such as "64 MiB", got {value!r}'
            raise reader.error(f"[limits] {key}", problem)
        return parsed

    def duration(key: str) -> float | None:
        return reader.interval("limits", key, 0.0) or None

    read: dict[str, Callable[[str], object]] = {
        "count": count, "number": number, "size": size, "duration": duration
    }  # fmt: skip
    given: dict[str, dict[str, Any]] = {"transport": {}, "session": {}, "node": {}}
    given["admission"] = {}
    for key, (kind, settings, name) in LIMIT_KEYS.items():
        value = read[kind](key)
        if value is not None:
            given[settings][name] = value
    defaults = Limits()
    try:
        node = dataclasses.replace(
            defaults.node,
            session=dataclasses.replace(defaults.node.session, **given["session"]),
            admission=dataclasses.replace(defaults.node.admission, **given["admission"]),
            **given["node"],
        )
        transport = dataclasses.replace(defaults.transport, **given["transport"])
    except ValueError as exc:
        raise reader.error("[limits]", str(exc)) from exc
    return Limits(transport=transport, node=node)


def _metrics_listen(reader: ConfigReader) -> str | None:
    """``[metrics] listen``, refused on a non-loopback address unless ``allow_public``: the
    endpoint has no authentication, and what it shows (peers, addresses, volumes) is for the
    operator, so it must not face the network by accident."""
    listen = reader.address("metrics", "listen")
    if listen is None or reader.boolean("metrics", "allow_public", False):
        return listen
    host, _port = parse_address(listen)
    if not is_loopback(host):
        raise reader.error(
            "[metrics] listen",
            f"{listen!r} is not a loopback address: the admin endpoint has no authentication; "
            'listen on "127.0.0.1:9464" (and let Prometheus reach it through a tunnel or a '
            "local agent), or set [metrics] allow_public = true behind a firewall",
        )
    return listen


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def bootstrap_peers(reader: ConfigReader) -> tuple[str, ...]:
    """``[bootstrap] peers``: dialable ``host:port`` strings."""
    peers = reader.get("bootstrap", "peers") or []
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise reader.error("[bootstrap] peers", 'expected a list of "host:port" strings')
    for index, peer in enumerate(peers):
        try:
            _host, port = parse_address(peer)
        except ConfigError as exc:
            raise reader.error(f"[bootstrap] peers[{index}]", str(exc)) from exc
        if port == 0:
            raise reader.error(f"[bootstrap] peers[{index}]", f"{peer!r}: port 0 cannot be dialled")
    return tuple(peers)


def _identity_share(reader: ConfigReader) -> IdentityShare:
    """``[limits] fragment_bytes_per_identity``: a size ("200 GiB") or a share of the store's
    quota ("25%", the default)."""
    where = "[limits] fragment_bytes_per_identity"
    value = reader.string("limits", "fragment_bytes_per_identity")
    if value is None:
        return IdentityShare()
    if value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            percent = -1.0
        if not 0 < percent <= 100:
            raise reader.error(where, f'expected a share from "1%" to "100%", got {value!r}')
        return IdentityShare(fraction=percent / 100)
    try:
        size = parse_size(value)
    except ConfigError as exc:
        raise reader.error(where, f'{exc} (or a share of the store quota, e.g. "25%")') from exc
    if size <= 0:
        raise reader.error(where, "must be more than 0 bytes")
    return IdentityShare(size=size)


def seeds_of(reader: ConfigReader) -> tuple[Seed, ...]:
    path = reader.existing_file("bootstrap", "seed_file")
    return load_seed_file(path) if path is not None else ()
