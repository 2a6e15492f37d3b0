"""The seed list: the mesh's published list of peers a new node can join through.

A mesh operator distributes one seed file to every datacenter (beside the CA certificate and
the revocation list).  Each seed may pin the node id its certificate must carry, so a seed's
address being taken over by another machine — even one holding a valid certificate of this
mesh — is refused instead of trusted.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from p2pstore.errors import ConfigError, IdentityError
from p2pstore.identity import parse_node_id
from p2pstore.net.address import parse_address

MAX_SEEDS = 1000


@dataclass(frozen=True, slots=True)
class Seed:
    """One peer to join through; ``node_id`` pins whom we expect there (None: any node)."""

    address: str
    node_id: bytes | None = None


def load_seed_file(path: Path) -> tuple[Seed, ...]:
    """Read a seed file; :class:`ConfigError` names the file, the entry and the key."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such seed file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the seed file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(document) - {"seed"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r}: expected [[seed]] tables")
    entries = document.get("seed", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: [[seed]] must be an array of tables")
    if len(entries) > MAX_SEEDS:
        raise ConfigError(f"{path}: {len(entries)} seeds; at most {MAX_SEEDS} are read")
    return tuple(_seed(f"{path}: seed[{index}]", entry) for index, entry in enumerate(entries))


def _seed(where: str, entry: dict[str, object]) -> Seed:
    extra = set(entry) - {"address", "node_id", "note"}
    if extra:
        raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}")
    address = entry.get("address")
    if not isinstance(address, str):
        raise ConfigError(f'{where}: address is required, as "host:port"')
    try:
        _host, port = parse_address(address)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"{where}: {address!r}: port 0 cannot be dialled")
    node_id = entry.get("node_id")
    if node_id is None:
        return Seed(address)
    if not isinstance(node_id, str):
        raise ConfigError(f"{where}: node_id must be 40 hex characters")
    try:
        return Seed(address, parse_node_id(node_id))
    except IdentityError as exc:
        raise ConfigError(f"{where}: node_id: {exc}") from exc
