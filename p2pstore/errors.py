"""The one tree of errors p2pstore raises.

Strategy: every error says *what* went wrong and *what to do*, and its class tells the caller
which side is at fault.  ``ProtocolError`` splits like h11's: ``LocalProtocolError`` means we
misused the protocol (a bug here), ``RemoteProtocolError`` means the peer sent garbage (drop
that peer's session, keep serving everyone else).  Drivers translate trio and OS exceptions into
these once, at the boundary, with ``raise ... from``.
"""

from __future__ import annotations


class P2PStoreError(Exception):
    """Base of every error p2pstore raises on purpose."""


class ConfigError(P2PStoreError):
    """A configuration file, option or argument is invalid; the message names the key."""


class IdentityError(P2PStoreError):
    """A key, certificate, CA or revocation list is missing, unreadable or inconsistent."""


class KeyEncrypted(IdentityError):
    """A key file is passphrase-encrypted and no passphrase was given (ask for one and retry)."""


class ProtocolError(P2PStoreError):
    """A protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol forbids (a bug on this side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed, oversized or out of order."""


class PeerRefused(P2PStoreError):
    """A peer failed authentication: wrong CA, expired or revoked certificate, wrong node id,
    or no TLS at all.  ``reason`` is the short machine-greppable cause."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PeerUnreachable(P2PStoreError):
    """A peer could not be reached, or the connection to it broke."""


class RequestTimeout(PeerUnreachable):
    """A request got no answer within its deadline."""


class RemoteError(P2PStoreError):
    """The peer understood the request and answered with an error of its own.

    ``code`` is what the peer sent; ``kind`` the class of this module it names, looked up in
    :data:`REMOTE_ERRORS` (None for a code outside it: a newer peer's, or garbage), so callers
    ask :meth:`means` instead of comparing strings."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.kind: type[P2PStoreError] | None = REMOTE_ERRORS.get(code)

    def means(self, kind: type[P2PStoreError]) -> bool:
        """Whether the peer's error is a ``kind`` (or a subclass of it)."""
        return self.kind is not None and issubclass(self.kind, kind)


class PeerTooOld(RemoteError):
    """A request was not sent: the wire version settled with the peer predates it (a node of
    the previous release).  Handled as the peer's ``unsupported`` refusal, which is what it
    would have answered; ``needed`` and ``settled`` are the two versions."""

    def __init__(self, message: str, *, needed: int, settled: int) -> None:
        super().__init__(message, code="unsupported")
        self.needed = needed
        self.settled = settled


class IntegrityError(P2PStoreError):
    """Bytes do not match the id or authentication tag that vouches for them."""


class NotEnoughFragments(P2PStoreError):
    """Fewer than ``needed`` fragments of a chunk could be fetched."""

    def __init__(self, message: str, *, needed: int, found: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.found = found


class ObjectNotFound(P2PStoreError):
    """No valid manifest for this object id could be found in the mesh."""


class StoreError(P2PStoreError):
    """The local fragment store cannot do what was asked (disk error, read-only, ...)."""


class FragmentNotFound(StoreError):
    """The store holds no fragment with this id (it was never stored, deleted, or lost)."""


class QuotaExceeded(StoreError):
    """The fragment store is full: storing more would pass its configured quota, or, when
    ``identity`` is set, the share of it one uploading identity may hold (the message names the
    identity and its usage); either way the fragment belongs on another node."""

    def __init__(self, message: str, *, identity: bytes | None = None) -> None:
        super().__init__(message)
        self.identity = identity


class StoreNotWritable(StoreError):
    """The disk under the fragment store refuses writes (read-only, full, no permission).
    Reads still work; the message names the path and the OS error."""


class NodeStopping(P2PStoreError):
    """The node is shutting down: it finishes the writes it accepted and takes no new ones,
    so the fragment belongs on another node."""


class NodeLeaving(P2PStoreError):
    """The node is being drained out of the mesh: it serves its fragments until stewards have
    moved them, and takes no new ones."""


class RecordRejected(P2PStoreError):
    """A DHT record was refused; ``reason`` is one of ``p2pstore.core.records.RejectReason``.

    Unless ``sender_at_fault`` is False (a store that is full, a newer version held, a
    publisher over its quota here or revoked since the sender took the record), the record broke
    a rule: drop it, note the peer that sent it, keep serving everyone else.
    """

    NOT_THE_SENDERS_FAULT = frozenset({"stale", "full", "over-quota", "revoked"})

    def __init__(self, message: str, *, reason: str, publisher: bytes | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.publisher = publisher
        """The node id of the publisher a refusal is about (set for ``over-quota``)."""

    @property
    def sender_at_fault(self) -> bool:
        """True when the record itself is invalid, False when only this holder declined it."""
        return self.reason not in self.NOT_THE_SENDERS_FAULT


class PlacementError(P2PStoreError):
    """A coding rule cannot be met with the peers that can be reached: the put (or repair)
    stops rather than place fragments more weakly than the rule says.  ``needed`` and
    ``available`` count what fell short (peers or datacenters, as the message says)."""

    def __init__(self, message: str, *, rule: str, needed: int, available: int) -> None:
        super().__init__(message)
        self.rule = rule
        self.needed = needed
        self.available = available


class PutFailed(P2PStoreError):
    """A put could not store every fragment of every chunk; no capability was issued.
    ``chunk`` is the first chunk that failed (None when the manifest could not be published)."""

    def __init__(self, message: str, *, chunk: int | None) -> None:
        super().__init__(message)
        self.chunk = chunk


class EntryRejected(P2PStoreError):
    """A bucket index entry was refused; ``reason`` is one of
    ``p2pstore.core.bucket_index.EntryReason``.  Like :class:`RecordRejected`, a refusal for
    ``full`` or ``over-quota`` is the replica declining, the others mean the entry is invalid."""

    NOT_THE_SENDERS_FAULT = frozenset({"full", "over-quota", "revoked"})

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def sender_at_fault(self) -> bool:
        """True when the entry itself is invalid, False when only this replica declined it."""
        return self.reason not in self.NOT_THE_SENDERS_FAULT


class BucketNotFound(P2PStoreError):
    """No replica knows the bucket, or the name has no live version in it."""


def error_code(error: P2PStoreError) -> str:
    """The code a node sends back for ``error`` (its class's name: the key of
    :data:`REMOTE_ERRORS`)."""
    return type(error).__name__


REMOTE_ERRORS: dict[str, type[P2PStoreError]] = {
    kind.__name__: kind
    for kind in (
        P2PStoreError,
        ConfigError,
        ProtocolError,
        LocalProtocolError,
        RemoteProtocolError,
        PeerRefused,
        PeerUnreachable,
        RequestTimeout,
        IntegrityError,
        NotEnoughFragments,
        ObjectNotFound,
        StoreError,
        FragmentNotFound,
        QuotaExceeded,
        StoreNotWritable,
        NodeStopping,
        NodeLeaving,
        RecordRejected,
        PlacementError,
        PutFailed,
        EntryRejected,
        BucketNotFound,
        IdentityError,
        RemoteError,
    )
}
"""The one table from the error codes peers send (the class names of this module: see
:func:`error_code`) to typed errors; :class:`RemoteError` reads it."""
