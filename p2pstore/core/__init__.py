"""Layer 3: the protocol's decisions as pure state machines: inputs and ``now`` in, actions out."""

from p2pstore.core.announcements import Announcement, decode_announcement, verify_announcement
from p2pstore.core.contact import Contact, xor_distance
from p2pstore.core.lookup import Lookup, LookupResult
from p2pstore.core.published import PublishedRecords
from p2pstore.core.record_store import PutResult, RecordStore
from p2pstore.core.records import (
    RULES,
    KindRules,
    RecordInfo,
    RecordKind,
    RejectReason,
    manifest_key,
    renew,
    sign_record,
    verify_record,
)
from p2pstore.core.routing import Liveness, RoutingTable, Update, UpdateKind
from p2pstore.errors import RecordRejected

__all__ = [
    "RULES",
    "Announcement",
    "Contact",
    "KindRules",
    "Liveness",
    "Lookup",
    "LookupResult",
    "PublishedRecords",
    "PutResult",
    "RecordInfo",
    "RecordKind",
    "RecordRejected",
    "RecordStore",
    "RejectReason",
    "RoutingTable",
    "Update",
    "UpdateKind",
    "decode_announcement",
    "manifest_key",
    "renew",
    "sign_record",
    "verify_announcement",
    "verify_record",
    "xor_distance",
]
