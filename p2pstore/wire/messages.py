"""The messages peers exchange, and the registry that gives each one its type code.

Strategy: a message is a frozen, slotted dataclass deriving from ``Message`` and registered
with ``@message(code)``.  That is all a new message needs: the schema (``schema.py``) is read
from its annotations, the envelope finds it by its code, and the wire tests build hypothesis
strategies for it from the registry.  Codes are part of the protocol: never reuse or renumber
one; bump ``PROTOCOL_VERSION`` when a message's fields change.  Modules that define further
messages must be imported by ``p2pstore.wire`` so that their codes are registered before the
first frame is decoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, ClassVar, Final, TypeVar

from .schema import Bound, Record, record, schema_of

PROTOCOL_VERSION: Final = 3
"""3: stewards renew leases (``RenewLeases``) and ask bucket replicas about one version, the CA
publishes revocation lists and the mesh policy as records (kinds 4 and 5), tenants publish
references (kind 6), bucket entries may release a legal hold.  A node also speaks version 2
(fragment ids are Merkle roots with audits, records carry certificates, placements are holders'
receipts) with a peer that offers no more, never sending it what version 2 does not know (see
``versions.py``).  Version 1 is refused at Hello (its ids and records mean other things)."""
MAX_TYPE_CODE: Final = 0xFFFF
NODE_ID_LENGTH: Final = 20
MAX_PADDING: Final = 16 * 1024 * 1024

M = TypeVar("M", bound="Message")


class Message(Record):
    """Base of every message; ``TYPE`` is set by ``@message(code)``."""

    __slots__ = ()
    TYPE: ClassVar[int]


_BY_CODE: dict[int, type[Message]] = {}
MESSAGE_TYPES: Final[Mapping[int, type[Message]]] = MappingProxyType(_BY_CODE)
"""Every registered message class by type code (a read-only, live view)."""

_max_array_len = 0


def message(code: int) -> Callable[[type[M]], type[M]]:
    """Class decorator registering a message class under the wire type ``code``.

    Raises ``TypeError`` at import when the code is out of range or already taken, when the
    class is already registered, or when its schema is invalid (see ``schema.record``).
    """
    if type(code) is not int or not 1 <= code <= MAX_TYPE_CODE:
        raise TypeError(f"message type code must be an int in [1, {MAX_TYPE_CODE}], not {code!r}")

    def register(cls: type[M]) -> type[M]:
        global _max_array_len  # noqa: PLW0603 - the registry is filled once, at import
        if not issubclass(cls, Message):
            raise TypeError(f"{cls.__qualname__}: messages must derive from Message")
        if code in _BY_CODE:
            other, this = _BY_CODE[code].__qualname__, cls.__qualname__
            raise TypeError(f"message type code {code} is used by both {other} and {this}")
        if "TYPE" in cls.__dict__:
            raise TypeError(f"{cls.__qualname__} is already registered as type {cls.TYPE}")
        schema = schema_of(cls)
        cls.TYPE = code
        _BY_CODE[code] = cls
        envelope_len = 3 + len(schema.fields)  # [kind, request_id, type, *fields]
        field_max = max([0] + [f.type.max_array_len() for f in schema.fields])
        _max_array_len = max(_max_array_len, envelope_len, field_max)
        return cls

    return register


def max_array_len() -> int:
    """The longest msgpack array any registered message can legitimately contain."""
    return _max_array_len


# --- connection life cycle -------------------------------------------------------------------


@message(1)
@dataclasses.dataclass(frozen=True, slots=True)
class Hello(Message):
    """The first message each side sends on a new connection (a notice).

    Its code and fields must never change, so that any two versions can decode each other's
    ``Hello`` and settle on a version or refuse each other clearly (``versions.py``): the
    versions offered ride in ``software``, and ``protocol_version`` is the oldest of them.
    """

    protocol_version: int
    listen_address: str
    software: str


@message(2)
@dataclasses.dataclass(frozen=True, slots=True)
class Goodbye(Message):
    """A graceful close: the sender will send nothing more on this connection (a notice)."""

    reason: str


# --- liveness and errors ---------------------------------------------------------------------


@message(3)
@dataclasses.dataclass(frozen=True, slots=True)
class Ping(Message):
    """A liveness probe; ``padding`` lets benchmarks measure throughput (up to 16 MiB)."""

    nonce: int
    padding: bytes = dataclasses.field(default=b"", metadata={"max_len": MAX_PADDING})


@message(4)
@dataclasses.dataclass(frozen=True, slots=True)
class Pong(Message):
    """The answer to a ``Ping``: its nonce and the number of padding bytes received."""

    nonce: int
    received: int = dataclasses.field(metadata={"min": 0, "max": MAX_PADDING})


@message(5)
@dataclasses.dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """A peer's typed refusal of a request.

    ``code`` is short and machine-readable ("bad-request", "unsupported", "busy",
    "internal", ...); ``message`` is for humans.
    """

    code: str = dataclasses.field(metadata={"min_len": 1, "max_len": 64})
    message: str


# --- status ----------------------------------------------------------------------------------


@message(6)
@dataclasses.dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    """Ask a peer to describe itself and its connections."""


NodeId = Annotated[bytes, Bound(min_len=NODE_ID_LENGTH, max_len=NODE_ID_LENGTH)]


@record
@dataclasses.dataclass(frozen=True, slots=True)
class PeerSummary(Record):
    """One peer as another peer sees it (a record inside ``StatusReply``, not a message)."""

    node_id: NodeId
    datacenter: str
    region: str
    address: str
    connected: bool


@message(7)
@dataclasses.dataclass(frozen=True, slots=True)
class StatusReply(Message):
    """A peer's description of itself and the peers it knows."""

    node_id: NodeId
    datacenter: str
    region: str
    listen_address: str
    peers: tuple[PeerSummary, ...]
