"""The message registry: unique codes, frozen slotted classes, refusals at import time."""

import dataclasses
from dataclasses import dataclass

import pytest

from p2pstore.errors import LocalProtocolError, RemoteProtocolError
from p2pstore.wire import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    ErrorReply,
    Hello,
    Message,
    PeerSummary,
    Ping,
    Pong,
    StatusReply,
    check_protocol_version,
    message,
)
from p2pstore.wire.messages import MAX_TYPE_CODE
from p2pstore.wire.schema import Record, schema_of


def test_type_codes_are_unique_and_match_their_classes():
    classes = list(MESSAGE_TYPES.values())
    assert len(set(classes)) == len(classes)
    for code, cls in MESSAGE_TYPES.items():
        assert code == cls.TYPE
        assert 1 <= code <= MAX_TYPE_CODE


@pytest.mark.parametrize("cls", [*MESSAGE_TYPES.values(), PeerSummary], ids=lambda c: c.__name__)
def test_wire_classes_are_frozen_and_slotted(cls):
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen
    assert all("__slots__" in c.__dict__ for c in cls.__mro__[:-1])
    schema = schema_of(cls)
    assert [f.name for f in dataclasses.fields(cls)] == list(schema.names)


def test_instances_have_no_dict_and_cannot_change():
    hello = Hello(PROTOCOL_VERSION, "10.0.0.1:7000", "p2pstore/0.1")
    assert not hasattr(hello, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        hello.software = "other"  # type: ignore[misc]


def test_the_messages_the_transport_needs_are_registered():
    needed = {"Hello", "Goodbye", "Ping", "Pong", "ErrorReply", "StatusRequest", "StatusReply"}
    assert needed <= {cls.__name__ for cls in MESSAGE_TYPES.values()}
    assert PeerSummary not in MESSAGE_TYPES.values()


@dataclass(frozen=True, slots=True)
class Extra(Message):
    note: str


def test_a_taken_code_fails_at_registration():
    before = dict(MESSAGE_TYPES)
    with pytest.raises(TypeError, match="code 1 is used by both Hello and Extra"):
        message(1)(Extra)
    assert dict(MESSAGE_TYPES) == before
    assert "TYPE" not in Extra.__dict__


def test_registering_a_class_twice_fails():
    with pytest.raises(TypeError, match="already registered"):
        message(MAX_TYPE_CODE)(Ping)
    assert MAX_TYPE_CODE not in MESSAGE_TYPES


@pytest.mark.parametrize("code", [0, -1, MAX_TYPE_CODE + 1, True, "3"])
def test_type_codes_must_be_small_positive_ints(code):
    with pytest.raises(TypeError, match="type code"):
        message(code)


def test_only_messages_can_be_registered():
    @dataclass(frozen=True, slots=True)
    class NotAMessage(Record):
        x: int

    with pytest.raises(TypeError, match="must derive from Message"):
        message(MAX_TYPE_CODE)(NotAMessage)
    assert MAX_TYPE_CODE not in MESSAGE_TYPES


def test_protocol_version_check():
    check_protocol_version(Hello(PROTOCOL_VERSION, "a:1", "p2pstore"))
    with pytest.raises(RemoteProtocolError, match=f"version {PROTOCOL_VERSION + 1}"):
        check_protocol_version(Hello(PROTOCOL_VERSION + 1, "a:1", "p2pstore/9"))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Pong(1, -1), r"Pong\.received: -1 out of range"),
        (lambda: ErrorReply("", "why"), r"string too short: ErrorReply\.code 0 < 1"),
        (lambda: ErrorReply("x" * 65, "why"), "string too long"),
        (lambda: PeerSummary(b"x" * 21, "d", "r", "a", True), r"PeerSummary\.node_id 21 > 20"),
        (
            lambda: StatusReply(
                b"x" * 20, "d", "r", "a", [PeerSummary(b"x" * 20, "d", "r", "a", True)]
            ),
            "expected tuple, got list",
        ),
        (lambda: Hello(True, "a", "b"), "expected int, got bool"),
        (lambda: Ping(2**64), "out of range"),
    ],
)
def test_message_construction_is_validated(build, match):
    with pytest.raises(LocalProtocolError, match=match):
        build()
