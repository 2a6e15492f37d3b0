"""Field validation for wire records: one schema, read from a dataclass's annotations.

Strategy: a wire record is a frozen, slotted dataclass whose fields are annotated with a small
closed set of types (``int``, ``bool``, ``float``, ``str``, ``bytes``, ``tuple[T, ...]``,
``X | None`` and other records).  When a class is registered its annotations are compiled
once into a tree of ``FieldType`` objects, and that one tree does three jobs: it validates
values when a record is built (``LocalProtocolError``: we tried to send garbage), it decodes
what msgpack produced from a peer's bytes (``RemoteProtocolError``: the peer sent garbage), and
it lets tests derive hypothesis strategies so a new message is fuzzed without new test code.

Every sized value has a bound (defaults below, overridable with
``dataclasses.field(metadata={"max_len": ...})`` or, for tuple items,
``Annotated[bytes, Bound(max_len=...)]``), so nothing a peer sends can make us hold more than
the frame it came in.  The decode walk follows the schema, never the data, so its depth is the
schema's depth, which is checked against ``MAX_DEPTH`` at registration.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar

from p2pstore.errors import LocalProtocolError, RemoteProtocolError

INT_MIN: Final = -(1 << 63)
INT_MAX: Final = (1 << 64) - 1
DEFAULT_MAX_STR: Final = 1024
DEFAULT_MAX_BYTES: Final = 64 * 1024
DEFAULT_MAX_ITEMS: Final = 1024
MAX_DEPTH: Final = 8

R = TypeVar("R", bound="Record")


@dataclasses.dataclass(frozen=True, slots=True)
class Bound:
    """Limits for one value: lengths for str/bytes/tuple, a range for int.

    Used as ``field(metadata={"max_len": 20, "min_len": 20})`` on a field, or as
    ``Annotated[bytes, Bound(max_len=32)]`` inside a tuple.
    """

    min_len: int | None = None
    max_len: int | None = None
    min: int | None = None
    max: int | None = None


class Invalid(Exception):
    """A value does not fit its schema.  ``template`` says what, with ``{where}`` for the path;
    containers prepend their part of the path as the error travels up."""

    def __init__(self, template: str) -> None:
        super().__init__(template)
        self.template = template if "{where}" in template else "{where}: " + template
        self.path: list[str] = []

    def render(self, root: str) -> str:
        return self.template.replace("{where}", root + "".join(reversed(self.path)))


def _type_name(value: object) -> str:
    return "None" if value is None else type(value).__name__


class FieldType:
    """One compiled annotation.  Subclasses are immutable after compilation."""

    __slots__ = ()

    def check(self, value: object) -> None:
        """Validate a value given to a constructor (records are checked shallowly).
        Raises ``Invalid``."""
        raise NotImplementedError

    def decode(self, raw: object) -> Any:
        """Turn what msgpack produced into the field's value.  Raises ``Invalid``."""
        self.check(raw)
        return raw

    @property
    def plain(self) -> bool:
        """True when decoded msgpack values are already the field's values (no records)."""
        return True

    def max_array_len(self) -> int:
        """The longest msgpack array this type can legitimately produce."""
        return 0

    def depth(self) -> int:
        """How many msgpack arrays deep this type nests."""
        return 0


class IntType(FieldType):
    __slots__ = ("max", "min")

    def __init__(self, bound: Bound) -> None:
        self.min = INT_MIN if bound.min is None else bound.min
        self.max = INT_MAX if bound.max is None else bound.max
        if not INT_MIN <= self.min <= self.max <= INT_MAX:
            raise TypeError(f"int bounds [{self.min}, {self.max}] must lie within 64 bits")

    def check(self, value: object) -> None:
        if type(value) is not int:  # bool is a subclass of int, and is not an int here
            raise Invalid(f"expected int, got {_type_name(value)}")
        if not self.min <= value <= self.max:
            raise Invalid(f"{{where}}: {value} out of range [{self.min}, {self.max}]")


class BoolType(FieldType):
    __slots__ = ()

    def check(self, value: object) -> None:
        if type(value) is not bool:
            raise Invalid(f"expected bool, got {_type_name(value)}")


class FloatType(FieldType):
    __slots__ = ()

    def check(self, value: object) -> None:
        if type(value) is not float:
            raise Invalid(f"expected float, got {_type_name(value)}")


class _SizedType(FieldType):
    __slots__ = ("max_len", "min_len")
    kind: str = ""
    noun: str = ""
    type_: type = object
    default_max: int = 0

    def __init__(self, bound: Bound) -> None:
        self.min_len = bound.min_len or 0
        self.max_len = self.default_max if bound.max_len is None else bound.max_len
        if not 0 <= self.min_len <= self.max_len:
            raise TypeError(f"length bounds [{self.min_len}, {self.max_len}] are invalid")

    def check(self, value: object) -> None:
        self._check_len(value)

    def _check_len(self, value: Any) -> None:
        if type(value) is not self.type_:
            raise Invalid(f"expected {self.kind}, got {_type_name(value)}")
        n = len(typing.cast("typing.Sized", value))
        if n > self.max_len:
            raise Invalid(f"{self.noun} too long: {{where}} {n} > {self.max_len}")
        if n < self.min_len:
            raise Invalid(f"{self.noun} too short: {{where}} {n} < {self.min_len}")


class StrType(_SizedType):
    """A UTF-8 string; bounds count code points."""

    __slots__ = ()
    kind = "str"
    noun = "string"
    type_ = str
    default_max = DEFAULT_MAX_STR

    def check(self, value: object) -> None:
        self._check_len(value)
        text = typing.cast("str", value)
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise Invalid("{where}: not encodable as UTF-8 (lone surrogate)") from None

    def decode(self, raw: object) -> Any:
        self._check_len(raw)  # msgpack has already checked the UTF-8
        return raw


class BytesType(_SizedType):
    __slots__ = ()
    kind = "bytes"
    noun = "bytes"
    type_ = bytes
    default_max = DEFAULT_MAX_BYTES


class TupleType(_SizedType):
    __slots__ = ("item",)
    kind = "tuple"
    noun = "tuple"
    type_ = tuple
    default_max = DEFAULT_MAX_ITEMS

    def __init__(self, item: FieldType, bound: Bound) -> None:
        super().__init__(bound)
        self.item = item

    def check(self, value: object) -> None:
        self._check_len(value)
        check = self.item.check
        for i, item in enumerate(typing.cast("tuple[object, ...]", value)):
            try:
                check(item)
            except Invalid as exc:
                exc.path.append(f"[{i}]")
                raise

    def decode(self, raw: object) -> Any:
        if self.item.plain:
            self.check(raw)
            return raw
        self._check_len(raw)
        decode = self.item.decode
        out = []
        for i, item in enumerate(typing.cast("tuple[object, ...]", raw)):
            try:
                out.append(decode(item))
            except Invalid as exc:
                exc.path.append(f"[{i}]")
                raise
        return tuple(out)

    @property
    def plain(self) -> bool:
        return self.item.plain

    def max_array_len(self) -> int:
        return max(self.max_len, self.item.max_array_len())

    def depth(self) -> int:
        return 1 + self.item.depth()


class OptionalType(FieldType):
    __slots__ = ("inner",)

    def __init__(self, inner: FieldType) -> None:
        self.inner = inner

    def check(self, value: object) -> None:
        if value is not None:
            self.inner.check(value)

    def decode(self, raw: object) -> Any:
        return None if raw is None else self.inner.decode(raw)

    @property
    def plain(self) -> bool:
        return self.inner.plain

    def max_array_len(self) -> int:
        return self.inner.max_array_len()

    def depth(self) -> int:
        return self.inner.depth()


class RecordType(FieldType):
    """A nested record, carried as a msgpack array of its fields in declaration order."""

    __slots__ = ("schema",)

    def __init__(self, schema: RecordSchema) -> None:
        self.schema = schema

    def check(self, value: object) -> None:
        if type(value) is not self.schema.cls:  # built, hence validated, by its constructor
            raise Invalid(f"expected {self.schema.name}, got {_type_name(value)}")

    def decode(self, raw: object) -> Any:
        return self.schema.decode(raw)

    @property
    def plain(self) -> bool:
        return False

    def max_array_len(self) -> int:
        return max([len(self.schema.fields)] + [f.type.max_array_len() for f in self.schema.fields])

    def depth(self) -> int:
        return 1 + max([0] + [f.type.depth() for f in self.schema.fields])


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType


class RecordSchema:
    """The compiled schema of one record class."""

    __slots__ = ("_decoders", "_own_rules", "cls", "fields", "name", "names")

    def __init__(self, cls: type[Record], fields: tuple[FieldSpec, ...]) -> None:
        self.cls = cls
        self.name = cls.__name__
        self.fields = fields
        self.names = tuple(f.name for f in fields)
        self._decoders = tuple(f.type.decode for f in fields)
        # Without cross-field rules, decoding validates each field once and skips __init__.
        self._own_rules = cls.__post_init__ is not Record.__post_init__

    def validate(self, obj: Record) -> None:
        """Check every field of a freshly built record.  Raises ``LocalProtocolError``."""
        for spec in self.fields:
            try:
                spec.type.check(getattr(obj, spec.name))
            except Invalid as exc:
                raise LocalProtocolError(exc.render(f"{self.name}.{spec.name}")) from None

    def values(self, obj: Record) -> list[Any]:
        """The field values in wire order (nested records are left for the packer's hook)."""
        return [getattr(obj, name) for name in self.names]

    def decode(self, raw: object) -> Record:
        """Build a record from a msgpack array of its fields.  Raises ``Invalid``."""
        if type(raw) is not tuple:
            raise Invalid(f"expected {self.name} as an array, got {_type_name(raw)}")
        return self.decode_fields(raw)

    def decode_fields(self, raw: tuple[object, ...]) -> Record:
        """Build a record from its decoded field values.  Raises ``Invalid``."""
        if len(raw) != len(self.fields):
            expected = len(self.fields)
            raise Invalid(f"{{where}}: expected {expected} fields, got {len(raw)}")
        values: list[Any] = []
        try:
            for decode, item in zip(self._decoders, raw, strict=True):
                values.append(decode(item))
        except Invalid as exc:
            exc.path.append(f".{self.names[len(values)]}")
            raise
        if self._own_rules:
            try:
                return self.cls(*values)
            except LocalProtocolError as exc:
                raise Invalid(f"{{where}}: {exc}") from None
        obj = object.__new__(self.cls)
        for name, value in zip(self.names, values, strict=True):
            object.__setattr__(obj, name, value)
        return obj


class Record:
    """Base of every wire value: a frozen, slotted dataclass validated when built.

    Cross-field rules: override ``__post_init__`` and call ``Record.__post_init__(self)`` first
    (zero-argument ``super()`` does not work in slotted dataclasses on Python 3.11); raise
    ``LocalProtocolError``, which decoding reports as ``RemoteProtocolError``.
    """

    __slots__ = ()

    def __post_init__(self) -> None:
        schema_of(type(self)).validate(self)


_SCHEMAS: dict[type[Record], RecordSchema] = {}


def record(cls: type[R]) -> type[R]:
    """Class decorator: compile and register a record's schema.

    Raises ``TypeError`` at import when the class is not a frozen, slotted dataclass deriving
    from ``Record``, or uses an unsupported, unbounded or too deeply nested field type.
    """
    schema_of(cls)
    return cls


def schema_of(cls: type[Record]) -> RecordSchema:
    """The compiled schema of a record class, compiling it on first use (see ``record``)."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _compile_record(cls, ())
    return schema


def decode_record(cls: type[R], raw_fields: tuple[object, ...]) -> R:
    """Build a record of ``cls`` from decoded msgpack field values.

    Raises ``RemoteProtocolError`` naming the field and what was wrong with it.
    """
    schema = schema_of(cls)
    try:
        return typing.cast("R", schema.decode_fields(raw_fields))
    except Invalid as exc:
        raise RemoteProtocolError(exc.render(schema.name)) from None


def _compile_record(cls: type[Record], stack: tuple[type, ...]) -> RecordSchema:
    where = cls.__qualname__
    if cls in stack:
        raise TypeError(f"{where}: a record cannot contain itself")
    if not (isinstance(cls, type) and issubclass(cls, Record)):
        raise TypeError(f"{where}: wire records must derive from p2pstore.wire.schema.Record")
    params = getattr(cls, "__dataclass_params__", None)
    if not dataclasses.is_dataclass(cls) or params is None or not params.frozen:
        raise TypeError(f"{where}: decorate it with @dataclass(frozen=True, slots=True)")
    if any("__slots__" not in c.__dict__ for c in cls.__mro__[:-1]):
        raise TypeError(f"{where}: every class in its hierarchy needs slots (slots=True)")
    hints = typing.get_type_hints(cls, include_extras=True)
    specs = []
    for f in dataclasses.fields(cls):
        if not f.init:
            raise TypeError(f"{where}.{f.name}: every field must be an __init__ argument")
        bound = Bound(**{k: f.metadata[k] for k in _BOUND_KEYS if k in f.metadata})
        try:
            specs.append(FieldSpec(f.name, _compile(hints[f.name], bound, (*stack, cls))))
        except TypeError as exc:
            raise TypeError(f"{where}.{f.name}: {exc}") from None
    schema = RecordSchema(cls, tuple(specs))
    depth = RecordType(schema).depth()
    if depth > MAX_DEPTH:
        raise TypeError(f"{where}: nests {depth} arrays deep, more than MAX_DEPTH={MAX_DEPTH}")
    _SCHEMAS[cls] = schema
    return schema


_BOUND_KEYS: Final = ("min_len", "max_len", "min", "max")
_NO_BOUND: Final = Bound()
_SCALARS: Final[dict[type, Callable[[Bound], FieldType]]] = {
    int: IntType,
    str: StrType,
    bytes: BytesType,
}


def _compile(tp: Any, bound: Bound, stack: tuple[type, ...]) -> FieldType:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *extras = typing.get_args(tp)
        for extra in extras:
            if isinstance(extra, Bound):
                bound = extra
        return _compile(inner, bound, stack)
    if origin is types.UnionType or origin is typing.Union:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) != 1 or len(typing.get_args(tp)) != 2:
            raise TypeError(f"only `X | None` unions are supported, not {tp!r}")
        return OptionalType(_compile(members[0], bound, stack))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"use tuple[T, ...], not {tp!r}")
        _refuse(bound, ("min", "max"), "tuple")
        return TupleType(_compile(args[0], _NO_BOUND, stack), bound)
    if tp in _SCALARS:
        _refuse(bound, ("min_len", "max_len") if tp is int else ("min", "max"), tp.__name__)
        return _SCALARS[tp](bound)
    if tp is bool or tp is float:
        _refuse(bound, _BOUND_KEYS, tp.__name__)
        return BoolType() if tp is bool else FloatType()
    if isinstance(tp, type) and issubclass(tp, Record):
        _refuse(bound, _BOUND_KEYS, tp.__name__)
        return RecordType(_SCHEMAS.get(tp) or _compile_record(tp, stack))
    raise TypeError(
        f"unsupported field type {tp!r}; use int, bool, float, str, bytes, tuple[T, ...], "
        "X | None or a Record"
    )


def _refuse(bound: Bound, keys: tuple[str, ...], kind: str) -> None:
    for key in keys:
        if getattr(bound, key) is not None:
            raise TypeError(f"bound {key!r} does not apply to {kind}")
