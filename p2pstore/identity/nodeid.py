"""Node ids: the 160-bit names peers have in the DHT.

Why a hash of the public key: a node id is self-certifying.  Nobody chooses where they sit in the
Kademlia id space (the ``kademlia`` package's 160-bit space); the id follows from the Ed25519 key
the mesh CA certified, so a peer cannot place itself next to an object it wants to capture without
also getting a fresh certificate for every key it grinds.  The id is
``sha256(raw 32-byte public key)[:20]``.
"""

from __future__ import annotations

import hashlib
import re
from typing import NewType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2pstore.errors import IdentityError

NodeId = NewType("NodeId", bytes)
"""Exactly :data:`NODE_ID_BYTES` bytes; build one with the functions of this module."""

NODE_ID_BYTES = 20
NODE_ID_HEX_CHARS = 2 * NODE_ID_BYTES
SHORT_ID_HEX_CHARS = 8
_HEX = re.compile(r"[0-9a-fA-F]+")


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte encoding of an Ed25519 public key (what the node id hashes)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def node_id_from_public_key(key: Ed25519PublicKey) -> NodeId:
    """The node id of a key: ``sha256(raw public key)[:20]``."""
    return NodeId(hashlib.sha256(public_key_bytes(key)).digest()[:NODE_ID_BYTES])


def node_id_from_bytes(raw: bytes) -> NodeId:
    """Check that ``raw`` has the length of a node id and type it as one.

    Raises :class:`IdentityError` if it is not exactly 20 bytes.
    """
    if len(raw) != NODE_ID_BYTES:
        raise IdentityError(
            f"a node id is {NODE_ID_BYTES} bytes, got {len(raw)} bytes ({raw[:24].hex()!r}...)"
        )
    return NodeId(bytes(raw))


def parse_node_id(text: str) -> NodeId:
    """Parse the 40-hex-character form of a node id (either case, surrounding blanks ignored).

    Raises :class:`IdentityError` naming the bad text if it is not 40 hex digits.
    """
    stripped = text.strip()
    if len(stripped) != NODE_ID_HEX_CHARS:
        raise IdentityError(
            f"{text!r} is not a node id: expected {NODE_ID_HEX_CHARS} hex characters, "
            f"got {len(stripped)}"
        )
    if _HEX.fullmatch(stripped) is None:
        raise IdentityError(f"{text!r} is not a node id: it must contain only hex digits 0-9a-f")
    return NodeId(bytes.fromhex(stripped))


def short_id(node_id: bytes) -> str:
    """The first 8 hex characters of a node id, for logs and tables."""
    return node_id[: SHORT_ID_HEX_CHARS // 2].hex()
