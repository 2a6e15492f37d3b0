"""The schema machinery: every supported field type, its bounds, and its two error directions."""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Annotated, Optional

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.errors import LocalProtocolError, RemoteProtocolError
from p2pstore.wire.schema import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_STR,
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    Bound,
    Record,
    decode_record,
    record,
    schema_of,
)


@record
@dataclass(frozen=True, slots=True)
class Inner(Record):
    flag: bool
    label: str | None


@record
@dataclass(frozen=True, slots=True)
class Everything(Record):
    number: int
    flag: bool
    ratio: float
    name: str = field(metadata={"max_len": 8})
    blob: bytes = field(metadata={"min_len": 2, "max_len": 4})
    ids: tuple[Annotated[bytes, Bound(max_len=3)], ...] = field(metadata={"max_len": 3})
    maybe: int | None = field(metadata={"min": 0, "max": 10})
    inners: tuple[Inner, ...]
    inner: Optional[Inner]  # noqa: UP045 - the typing.Optional spelling is supported too
    plain: bytes = b""
    text: str = ""
    many: tuple[int, ...] = ()


def good(**changes):
    values = {
        "number": -5,
        "flag": True,
        "ratio": 0.5,
        "name": "abc",
        "blob": b"xy",
        "ids": (b"a", b"bcd"),
        "maybe": None,
        "inners": (Inner(False, None), Inner(True, "x")),
        "inner": Inner(True, None),
    }
    values.update(changes)
    return Everything(**values)


def to_wire(obj):
    """What a peer would send for ``obj``: its fields as msgpack, read back as msgpack."""

    def default(value):
        return list(schema_of(type(value)).values(value))

    packed = msgpack.packb(schema_of(type(obj)).values(obj), use_bin_type=True, default=default)
    return msgpack.unpackb(packed, use_list=False, raw=False)


def test_a_good_record_round_trips_through_msgpack():
    obj = good()
    assert decode_record(Everything, to_wire(obj)) == obj


@settings(max_examples=150, deadline=None)
@given(
    number=st.integers(INT_MIN, INT_MAX),
    ratio=st.floats(),
    name=st.text(max_size=8),
    ids=st.lists(st.binary(max_size=3), max_size=3).map(tuple),
    maybe=st.none() | st.integers(0, 10),
    inners=st.lists(st.builds(Inner, st.booleans(), st.none() | st.text()), max_size=5),
)
def test_round_trip_of_every_field_type(number, ratio, name, ids, maybe, inners):
    obj = good(number=number, ratio=ratio, name=name, ids=ids, maybe=maybe, inners=tuple(inners))
    back = decode_record(Everything, to_wire(obj))
    if math.isnan(ratio):
        assert math.isnan(back.ratio)
        back = dataclasses.replace(back, ratio=ratio)
        obj = dataclasses.replace(obj, ratio=ratio)
    assert back == obj


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"number": True}, r"Everything\.number: expected int, got bool"),
        ({"number": 2**64}, r"Everything\.number: .* out of range"),
        ({"number": -(2**63) - 1}, "out of range"),
        ({"number": 1.0}, "expected int, got float"),
        ({"flag": 1}, r"Everything\.flag: expected bool, got int"),
        ({"ratio": 1}, "expected float, got int"),
        ({"name": "123456789"}, r"string too long: Everything\.name 9 > 8"),
        ({"name": b"abc"}, "expected str, got bytes"),
        ({"name": "\ud800"}, "lone surrogate"),
        ({"blob": b"x"}, r"bytes too short: Everything\.blob 1 < 2"),
        ({"blob": bytearray(b"xyz")}, "expected bytes, got bytearray"),
        ({"ids": [b"a"]}, "expected tuple, got list"),
        ({"ids": (b"a", b"b", b"c", b"d")}, r"tuple too long: Everything\.ids 4 > 3"),
        ({"ids": (b"a", b"abcd")}, r"bytes too long: Everything\.ids\[1\] 4 > 3"),
        ({"maybe": 11}, r"Everything\.maybe: 11 out of range \[0, 10\]"),
        ({"inners": (Inner(True, None), "x")}, r"inners\[1\]: expected Inner, got str"),
        ({"inner": (True, None)}, r"Everything\.inner: expected Inner, got tuple"),
        ({"plain": b"x" * (DEFAULT_MAX_BYTES + 1)}, "bytes too long"),
        ({"text": "x" * (DEFAULT_MAX_STR + 1)}, "string too long"),
        ({"many": (0,) * (DEFAULT_MAX_ITEMS + 1)}, "tuple too long"),
    ],
)
def test_construction_with_bad_values_is_a_local_error(changes, match):
    with pytest.raises(LocalProtocolError, match=match):
        good(**changes)


def test_inner_records_validate_themselves():
    with pytest.raises(LocalProtocolError, match=r"Inner\.flag: expected bool, got int"):
        Inner(0, None)


def wire_with(**changes):
    raw = list(to_wire(good()))
    names = schema_of(Everything).names
    for name, value in changes.items():
        raw[names.index(name)] = value
    return tuple(raw)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"number": True}, r"^Everything\.number: expected int, got bool$"),
        ({"number": "1"}, "expected int, got str"),
        ({"flag": 0}, "expected bool, got int"),
        ({"name": "x" * 9}, r"^string too long: Everything\.name 9 > 8$"),
        ({"blob": "xy"}, "expected bytes, got str"),
        ({"ids": b"ab"}, "expected tuple, got bytes"),
        ({"ids": (b"abcd",)}, r"Everything\.ids\[0\] 4 > 3"),
        ({"maybe": -1}, "out of range"),
        ({"inners": ((True, None), (True,))}, r"Everything\.inners\[1\]: expected 2 fields, got 1"),
        ({"inners": ((True, None), (1, None))}, r"Everything\.inners\[1\]\.flag: expected bool"),
        ({"inners": ({},)}, r"inners\[0\]: expected Inner as an array, got dict"),
        ({"inner": (True, 5)}, r"Everything\.inner\.label: expected str, got int"),
        ({"inner": [True, None]}, "expected Inner as an array, got list"),
    ],
)
def test_decoding_bad_values_is_a_remote_error(changes, match):
    with pytest.raises(RemoteProtocolError, match=match):
        decode_record(Everything, wire_with(**changes))


def test_decoding_the_wrong_number_of_fields():
    with pytest.raises(RemoteProtocolError, match="expected 12 fields, got 11"):
        decode_record(Everything, to_wire(good())[:-1])


def test_decoded_records_are_real_instances():
    back = decode_record(Everything, to_wire(good()))
    assert type(back.inner) is Inner
    assert all(type(i) is Inner for i in back.inners)
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.number = 1  # type: ignore[misc]


@record
@dataclass(frozen=True, slots=True)
class Ordered(Record):
    """A record with a cross-field rule."""

    low: int
    high: int

    def __post_init__(self):
        Record.__post_init__(self)
        if self.low > self.high:
            raise LocalProtocolError(f"Ordered: low {self.low} > high {self.high}")


def test_cross_field_rules_are_local_when_built_and_remote_when_decoded():
    with pytest.raises(LocalProtocolError, match="low 2 > high 1"):
        Ordered(2, 1)
    assert decode_record(Ordered, (1, 2)) == Ordered(1, 2)
    with pytest.raises(RemoteProtocolError, match="low 2 > high 1"):
        decode_record(Ordered, (2, 1))
    with pytest.raises(RemoteProtocolError, match=r"Ordered\.high: expected int"):
        decode_record(Ordered, (2, None))


# --- schemas refused when a class is registered ----------------------------------------------


def make(fields, *, frozen=True, slots=True, bases=(Record,)):
    return dataclasses.make_dataclass("Bad", fields, bases=bases, frozen=frozen, slots=slots)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ([("x", list[int])], "unsupported field type"),
        ([("x", dict)], "unsupported field type"),
        ([("x", tuple[int, str])], r"use tuple\[T, ...\]"),
        ([("x", int | str)], "only `X | None`"),
        ([("x", int, field(metadata={"max_len": 3}))], "'max_len' does not apply to int"),
        ([("x", str, field(metadata={"max": 3}))], "'max' does not apply to str"),
        ([("x", bool, field(metadata={"max": 3}))], "does not apply to bool"),
        ([("x", int, field(metadata={"max": 2**64}))], "within 64 bits"),
        ([("x", bytes, field(metadata={"min_len": 5, "max_len": 4}))], "length bounds"),
        ([("x", int, field(init=False, default=0))], "__init__ argument"),
    ],
)
def test_unsupported_schemas_fail_at_registration(fields, match):
    with pytest.raises(TypeError, match=match):
        record(make(fields))


def test_records_must_be_frozen_slotted_records():
    with pytest.raises(TypeError, match="frozen"):
        record(make([("x", int)], frozen=False))
    with pytest.raises(TypeError, match="slots"):
        record(make([("x", int)], slots=False))
    with pytest.raises(TypeError, match="derive from"):
        record(make([("x", int)], bases=()))


@dataclass(frozen=True, slots=True)
class Recursive(Record):
    child: "Recursive | None"


def test_recursive_records_are_refused():
    with pytest.raises(TypeError, match="cannot contain itself"):
        record(Recursive)


def test_schemas_deeper_than_max_depth_are_refused():
    inner = make([("x", int)])
    for _ in range(MAX_DEPTH - 1):
        inner = make([("x", inner)])
    record(inner)  # exactly MAX_DEPTH arrays deep
    with pytest.raises(TypeError, match="MAX_DEPTH"):
        record(make([("x", inner)]))
