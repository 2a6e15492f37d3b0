"""Capabilities: the strings a user keeps to read an object, or to let someone keep it alive.

A read cap ``p2ps:read:<object id>:<key>`` fetches, checks and decrypts the object.  A verify cap
``p2ps:verify:<object id>`` is the read cap minus the key: enough to fetch and check the
manifest and every fragment and to rebuild lost fragments (coding runs on ciphertext), never
enough to read.  Holding the string is the permission; there is no other access control.

Encoding: lowercase RFC 4648 base32 without padding (52 characters per 32 bytes): shorter than
hex, one case, no ``+/=`` to escape in URLs, shells or file names.  Parsing accepts upper case
too (people retype these) but only the canonical value: stray trailing bits are rejected, so a
capability has exactly one spelling.  A read cap's ``repr`` never shows the key; only
:meth:`ReadCap.to_string` does.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from p2pstore.codec.aead import KEY_BYTES
from p2pstore.codec.manifest import OBJECT_ID_BYTES
from p2pstore.errors import LocalProtocolError

SCHEME = "p2ps"
READ = "read"
VERIFY = "verify"
_ENCODED_32 = 52
MAX_CAPABILITY_CHARS = 200


class CapabilityError(LocalProtocolError):
    """A capability string is malformed; the message says which part.  (A LocalProtocolError:
    the caller handed us a bad string, no peer is involved.)"""


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str, what: str, size: int) -> bytes:
    if len(text) != _ENCODED_32:
        raise CapabilityError(
            f"the {what} in a capability must be {_ENCODED_32} base32 characters, "
            f"got {len(text)}: was the string cut when copied?"
        )
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise CapabilityError(
            f"the {what} in a capability is not base32 (letters a-z and digits 2-7 only)"
        ) from None
    if len(raw) != size or _b32(raw) != text.lower():
        raise CapabilityError(f"the {what} in a capability is not canonical base32")
    return raw


def _check_bytes(value: object, what: str, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise CapabilityError(f"a capability's {what} must be {size} bytes")


@dataclass(frozen=True, slots=True)
class VerifyCap:
    """Permission to check and repair an object, not to read it."""

    object_id: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.object_id, "object id", OBJECT_ID_BYTES)

    def to_string(self) -> str:
        """``p2ps:verify:<object id>``."""
        return f"{SCHEME}:{VERIFY}:{_b32(self.object_id)}"

    def __str__(self) -> str:
        return self.to_string()

    @classmethod
    def parse(cls, text: str) -> VerifyCap:
        """Parse a verify cap; raises :class:`CapabilityError` (a read cap is refused too)."""
        cap = parse_capability(text)
        if not isinstance(cap, VerifyCap):
            raise CapabilityError("expected a verify capability (p2ps:verify:...), got a read cap")
        return cap


@dataclass(frozen=True, slots=True)
class ReadCap:
    """Permission to read an object: its id and its 32-byte key.  ``repr`` hides the key."""

    object_id: bytes
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_bytes(self.object_id, "object id", OBJECT_ID_BYTES)
        _check_bytes(self.key, "key", KEY_BYTES)

    def __repr__(self) -> str:
        return f"ReadCap(object_id={_b32(self.object_id)}, key=<hidden>)"

    __str__ = __repr__

    def to_string(self) -> str:
        """``p2ps:read:<object id>:<key>`` -- contains the key: treat it as a secret."""
        return f"{SCHEME}:{READ}:{_b32(self.object_id)}:{_b32(self.key)}"

    def verify_cap(self) -> VerifyCap:
        """The verify cap of the same object (drop the key)."""
        return VerifyCap(self.object_id)

    @classmethod
    def parse(cls, text: str) -> ReadCap:
        """Parse a read cap; raises :class:`CapabilityError`."""
        cap = parse_capability(text)
        if not isinstance(cap, ReadCap):
            raise CapabilityError(
                "expected a read capability (p2ps:read:...), got a verify cap: it cannot read"
            )
        return cap


def parse_capability(text: str) -> ReadCap | VerifyCap:
    """Parse ``p2ps:read:<id>:<key>`` or ``p2ps:verify:<id>`` (surrounding whitespace ignored).

    Raises :class:`CapabilityError` naming the part that is wrong.
    """
    if not isinstance(text, str):
        raise CapabilityError(f"a capability is a string, got {type(text).__name__}")
    if len(text) > MAX_CAPABILITY_CHARS:
        raise CapabilityError(f"a capability is at most {MAX_CAPABILITY_CHARS} characters")
    parts = text.strip().split(":")
    if parts[0].lower() != SCHEME:
        raise CapabilityError(f"a capability starts with '{SCHEME}:', got {text.strip()[:12]!r}")
    kind = parts[1].lower() if len(parts) > 1 else ""
    if kind == READ:
        if len(parts) != 4:
            raise CapabilityError("a read capability is p2ps:read:<object id>:<key>")
        return ReadCap(
            _unb32(parts[2], "object id", OBJECT_ID_BYTES), _unb32(parts[3], "key", KEY_BYTES)
        )
    if kind == VERIFY:
        if len(parts) != 3:
            raise CapabilityError("a verify capability is p2ps:verify:<object id>")
        return VerifyCap(_unb32(parts[2], "object id", OBJECT_ID_BYTES))
    raise CapabilityError(f"unknown capability kind {kind!r}: expected '{READ}' or '{VERIFY}'")
