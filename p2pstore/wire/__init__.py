"""Layer 2: typed messages, their msgpack encoding, and length-prefixed frames.

Importing this package registers every message type; modules that add messages must be
imported here.
"""

from .dht import (
    MAX_CONTACTS,
    MAX_RECORD_VALUE,
    MAX_RECORDS_PER_REPLY,
    ContactInfo,
    FindNode,
    FindNodeReply,
    FindValue,
    FindValueReply,
    SignedRecord,
    Store,
    StoreReply,
)
from .envelope import MAX_REQUEST_ID, Envelope, Kind, decode_envelope, encode_envelope
from .fragments import (
    MAX_FRAGMENT,
    GetFragment,
    GetFragmentReply,
    HasFragments,
    HasFragmentsReply,
    PutFragment,
    PutFragmentReply,
)
from .framing import DEFAULT_MAX_FRAME, FRAME_HEADER, FrameDecoder, frame_header
from .messages import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    ErrorReply,
    Goodbye,
    Hello,
    Message,
    PeerSummary,
    Ping,
    Pong,
    StatusReply,
    StatusRequest,
    check_protocol_version,
    message,
)
from .schema import Bound, Record, record

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FRAME_HEADER",
    "MAX_CONTACTS",
    "MAX_FRAGMENT",
    "MAX_RECORDS_PER_REPLY",
    "MAX_RECORD_VALUE",
    "MAX_REQUEST_ID",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "Bound",
    "ContactInfo",
    "Envelope",
    "ErrorReply",
    "FindNode",
    "FindNodeReply",
    "FindValue",
    "FindValueReply",
    "FrameDecoder",
    "GetFragment",
    "GetFragmentReply",
    "Goodbye",
    "HasFragments",
    "HasFragmentsReply",
    "Hello",
    "Kind",
    "Message",
    "PeerSummary",
    "Ping",
    "Pong",
    "PutFragment",
    "PutFragmentReply",
    "Record",
    "SignedRecord",
    "StatusReply",
    "StatusRequest",
    "Store",
    "StoreReply",
    "check_protocol_version",
    "decode_envelope",
    "encode_envelope",
    "frame_header",
    "message",
    "record",
]
