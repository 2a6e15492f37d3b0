"""What one frame carries: a message, what kind of exchange it belongs to, and its request id.

Strategy: the payload is one msgpack array ``[kind, request_id, type, *fields]`` so that the
common case costs one ``packb``/``unpackb`` and no per-byte Python work, even for a 16 MiB
fragment.  Decoding treats every byte as hostile: msgpack runs with limits derived from the
payload and the message registry (no maps, no extension types, arrays no longer than any
registered schema allows, a budget of array items so a frame of tiny arrays cannot expand into
gigabytes of Python objects), and the result is then checked field by field against the
message's schema.  Whatever is wrong, the caller gets a ``RemoteProtocolError`` saying what.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Final, NoReturn

import msgpack

from p2pstore.errors import LocalProtocolError, RemoteProtocolError

from .messages import MESSAGE_TYPES, Message, max_array_len
from .schema import Record, decode_record, schema_of

MAX_REQUEST_ID: Final = (1 << 32) - 1
MAX_ARRAY_ITEMS: Final = 1 << 20
"""Total items of all msgpack arrays in one payload; bounds the memory a hostile frame costs."""


class Kind(enum.IntEnum):
    """The exchange a message belongs to."""

    REQUEST = 0  # expects exactly one RESPONSE with the same request id
    RESPONSE = 1
    NOTICE = 2  # one-way (Hello, Goodbye); request id 0


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """One message with its kind and request id (0 for notices, 1..2**32-1 otherwise).

    Raises ``LocalProtocolError`` when built with inconsistent values.
    """

    kind: Kind
    request_id: int
    message: Message

    def __post_init__(self) -> None:
        problem = _envelope_problem(self.kind, self.request_id)
        if problem is None and not isinstance(self.message, Message):
            problem = f"envelope message: expected a Message, got {type(self.message).__name__}"
        if problem is None and "TYPE" not in type(self.message).__dict__:
            problem = f"{type(self.message).__name__} is not registered with @message(code)"
        if problem is not None:
            raise LocalProtocolError(problem)


def _envelope_problem(kind: object, request_id: object) -> str | None:
    if not isinstance(kind, Kind):
        return f"envelope kind: expected Kind, got {type(kind).__name__}"
    if type(request_id) is not int:
        return f"envelope request_id: expected int, got {type(request_id).__name__}"
    if kind is Kind.NOTICE:
        if request_id != 0:
            return f"envelope request_id: a notice has request id 0, got {request_id}"
    elif not 1 <= request_id <= MAX_REQUEST_ID:
        return (
            f"envelope request_id: {request_id} out of range [1, {MAX_REQUEST_ID}] "
            f"for a {kind.name}"
        )
    return None


def _pack_record(obj: object) -> list[Any]:
    if isinstance(obj, Record):
        return schema_of(type(obj)).values(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} on the wire")


def encode_envelope(envelope: Envelope) -> bytes:
    """The msgpack payload for one frame (without its header).

    Values were validated when built, so this only raises ``LocalProtocolError`` if a field
    holds something msgpack cannot carry (a bug in a hand-written ``__post_init__``).
    """
    message = envelope.message
    fields = schema_of(type(message)).values(message)
    try:
        return msgpack.packb(  # type: ignore[no-any-return]
            [int(envelope.kind), envelope.request_id, message.TYPE, *fields],
            use_bin_type=True,
            default=_pack_record,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from exc


class _ArrayBudget:
    """A msgpack ``list_hook`` counting array items, refusing more than ``MAX_ARRAY_ITEMS``."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_ARRAY_ITEMS

    def __call__(self, items: tuple[object, ...]) -> tuple[object, ...]:
        self.left -= len(items) + 1
        if self.left < 0:
            raise ValueError(f"more than {MAX_ARRAY_ITEMS} array items in one message")
        return items


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _unpack(payload: bytes | bytearray | memoryview) -> object:
    size = len(payload)
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=max_array_len(),
            max_map_len=0,
            max_ext_len=0,
            ext_hook=_refuse_ext,
            list_hook=_ArrayBudget(),
        )
    except msgpack.exceptions.StackError:
        raise RemoteProtocolError("nesting too deep for msgpack's stack") from None
    except msgpack.exceptions.ExtraData:
        raise RemoteProtocolError("trailing bytes after message") from None
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"invalid UTF-8 in a string: {exc.reason}") from None
    except (ValueError, TypeError, OverflowError, msgpack.exceptions.UnpackException) as exc:
        raise RemoteProtocolError(f"invalid msgpack: {exc or type(exc).__name__}") from None


def decode_envelope(payload: bytes | bytearray | memoryview) -> Envelope:
    """Decode one frame's payload.

    Raises ``RemoteProtocolError`` (and nothing else) naming what was wrong: invalid msgpack,
    nesting too deep, trailing bytes, unknown message type, a bad kind or request id, or a
    field of the wrong type or size.
    """
    raw = _unpack(payload)
    if type(raw) is not tuple or len(raw) < 3:
        raise RemoteProtocolError(
            f"envelope: expected an array [kind, request_id, type, *fields], got {_describe(raw)}"
        )
    kind_code, request_id, type_code = raw[0], raw[1], raw[2]
    if type(kind_code) is not int or kind_code not in _KIND_CODES:
        raise RemoteProtocolError(f"envelope kind: unknown kind {_describe(kind_code)}")
    if type(request_id) is not int:
        raise RemoteProtocolError(f"envelope request_id: expected int, got {_describe(request_id)}")
    kind = Kind(kind_code)
    problem = _envelope_problem(kind, request_id)
    if problem is not None:
        raise RemoteProtocolError(problem)
    if type(type_code) is not int:
        raise RemoteProtocolError(f"envelope type: expected int, got {_describe(type_code)}")
    cls = MESSAGE_TYPES.get(type_code)
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {type_code}")
    message = decode_record(cls, raw[3:])
    return Envelope(kind, request_id, message)


_KIND_CODES: Final = frozenset(int(k) for k in Kind)


def _describe(value: object) -> str:
    if type(value) is tuple:
        return f"an array of {len(value)}"
    if type(value) is int:
        return str(value)
    return type(value).__name__
