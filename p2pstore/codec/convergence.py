"""Convergent keys: the same user storing the same content twice gets the same key, so the
same ciphertext, fragments and object id -- the second put stores nothing new.

Strategy.  key = HMAC-SHA256(user secret, tag || object size || SHA-256(plaintext)).  The per-user
secret is what keeps this safe: without it convergent encryption lets anyone who can guess a file
confirm that it is stored (and brute-force low-entropy fields in it); with it only the same user
can, and different users never share keys or fragments.  The plaintext hash is an input to an
HMAC, never stored: manifests carry no hash of the plaintext.  The key depends on the content
only; chunk size and cipher are bound later when the chunk key is derived (see aead.py), so one
key is safe under any layout.

Computing the key needs a first pass over the content; :class:`ConvergentKeyDeriver` takes it
chunk by chunk so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from p2pstore.codec.chunking import MAX_OBJECT_SIZE
from p2pstore.errors import LocalProtocolError

MIN_USER_SECRET_BYTES = 16
_CONVERGENT_TAG = b"p2pstore/convergent-key/v1\x00"


class ConvergentKeyDeriver:
    """Streams an object's content and then yields its convergent key.

    Usage: ``d = ConvergentKeyDeriver(secret); for c in chunks: d.update(c); key = d.key()``.
    """

    __slots__ = ("_hash", "_secret", "_size")

    def __init__(self, user_secret: bytes) -> None:
        """Raises :class:`LocalProtocolError` if ``user_secret`` is shorter than 16 bytes."""
        if not isinstance(user_secret, bytes) or len(user_secret) < MIN_USER_SECRET_BYTES:
            raise LocalProtocolError(
                f"a convergence secret must be at least {MIN_USER_SECRET_BYTES} bytes; "
                "generate one per user once and keep it with the user's configuration"
            )
        self._secret = user_secret
        self._hash = hashlib.sha256()
        self._size = 0

    def __repr__(self) -> str:
        return f"ConvergentKeyDeriver(size={self._size}, secret=<hidden>)"

    @property
    def size(self) -> int:
        """Bytes seen so far: the object's size once every chunk was passed to :meth:`update`."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next piece of the content (any split gives the same key)."""
        self._size += len(data)
        if self._size > MAX_OBJECT_SIZE:
            raise LocalProtocolError(f"object is larger than {MAX_OBJECT_SIZE} bytes")
        self._hash.update(data)

    def key(self) -> bytes:
        """The 32-byte convergent key of the content fed so far."""
        message = _CONVERGENT_TAG + struct.pack(">Q", self._size) + self._hash.digest()
        return hmac.digest(self._secret, message, "sha256")


def convergent_key(user_secret: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """The convergent key of ``data`` held whole in memory (small objects, tests)."""
    deriver = ConvergentKeyDeriver(user_secret)
    deriver.update(data)
    return deriver.key()
