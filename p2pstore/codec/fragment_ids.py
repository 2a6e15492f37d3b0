"""Content addresses: a fragment's id is a Merkle root over fixed-size leaves of its bytes.

Why a tree: a holder proves it still has a fragment by returning one leaf the challenger picked
at random, with the sibling hashes up to the root; anyone holding the id checks the answer
without the rest of the fragment (see :mod:`p2pstore.core.audit`).  A flat hash would make the
challenger fetch the whole fragment.

Shape (RFC 6962's, with our own tags): leaves are ``LEAF_SIZE`` bytes, the last one shorter, a
fragment of 0 bytes one empty leaf.  A leaf hashes as ``H(0x00 || leaf)``, an inner node as
``H(0x01 || left || right)``; a range of n > 1 leaves splits at the largest power of two below
n, so a lone last node is carried up unchanged and the shape depends only on n.  The id is
``H(0x02 || leaf size (4 bytes) || length (8 bytes) || root)``: the length fixes the shape, so a
proof for leaf i of a fragment of L bytes means exactly one thing, and a tag keeps a leaf or a
node from passing as an id.  The tree is built with a stack of perfect subtrees, so hashing a
file in a stream needs O(log n) memory.

Why 16 KiB leaves and SHA-256 (``python benchmarks/merkle.py``: ids of 1 MiB fragments, one
thread, three runs on 2 shared cores with SHA-NI, MiB/s and share of the flat hash's speed)::

    leaf      SHA-256 tree          BLAKE3 tree           one audit answer (leaf + path)
    4 KiB      780-890  (62-63%)     700-840  (16-18%)     4,096 + 8 x 32 =  4,352 B
    16 KiB   1,110-1,250 (87-90%)  1,540-1,730 (33-35%)   16,384 + 6 x 32 = 16,576 B
    64 KiB   1,220-1,380 (96-102%) 2,900-3,400 (61-66%)   65,536 + 4 x 32 = 65,664 B
    flat     1,250-1,450           4,400-5,200

At 16 KiB a 1 MiB fragment costs 64 leaf and 63 node hashes, ~10% over one flat SHA-256 call;
at 4 KiB the per-call cost of Python shows, at 64 KiB answers are 4x larger for a few percent.
A 4-of-8 put hashes twice its bytes: at 87 MiB/s that is ~0.14 core-seconds per second with flat
SHA-256 and ~0.16 with the tree, about 1% of the put's two cores.  BLAKE3 only wins with large
leaves (its speed comes from hashing many 1 KiB chunks at once), and a hash that is ~8% of a put
does not justify a new native dependency; the hash is not what bounds a put (zfec and TCP are).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from p2pstore.errors import IntegrityError, LocalProtocolError

FRAGMENT_ID_BYTES = 32
LEAF_SIZE = 16 * 1024
"""Bytes per leaf (the wire bounds an audit answer's leaf by this; a test pins that)."""
MAX_LENGTH = (1 << 64) - 1

_LEAF_TAG = b"\x00"
_NODE_TAG = b"\x01"
_ID_TAG = b"\x02"

Buffer = bytes | bytearray | memoryview


class Hasher(Protocol):
    """What the tree needs of a hash object (hashlib's and blake3's both fit)."""

    def update(self, data: Buffer, /) -> object: ...

    def digest(self) -> bytes: ...

    def copy(self) -> Hasher: ...


@dataclass(frozen=True, slots=True)
class AuditProof:
    """A holder's answer to "show me leaf i": the leaf, its sibling hashes from the bottom up,
    and the fragment's length (which fixes the tree's shape)."""

    leaf: bytes
    path: tuple[bytes, ...]
    length: int

    def __post_init__(self) -> None:
        if not isinstance(self.leaf, bytes) or not isinstance(self.path, tuple):
            raise LocalProtocolError("an audit proof is (leaf bytes, tuple of hashes, length)")
        if not all(isinstance(node, bytes) and len(node) == 32 for node in self.path):
            raise LocalProtocolError("every hash in an audit proof's path is 32 bytes")
        if type(self.length) is not int or not 0 <= self.length <= MAX_LENGTH:
            raise LocalProtocolError(f"fragment length {self.length!r} is out of range")

    @property
    def size(self) -> int:
        """Bytes of leaf and path (what an answer costs on the wire, give or take framing)."""
        return len(self.leaf) + 32 * len(self.path)


class MerkleScheme:
    """One choice of leaf size and hash; the module's functions use :data:`SCHEME`.  Other
    schemes exist only for the benchmark that picked this one."""

    __slots__ = ("_leaf_hasher", "_new", "leaf_size")

    def __init__(self, leaf_size: int, new_hash: Callable[[], Hasher]) -> None:
        if leaf_size < 1 or leaf_size >= 1 << 32:
            raise ValueError(f"leaf size {leaf_size} must be in [1, 2^32)")
        self.leaf_size = leaf_size
        self._new = new_hash
        self._leaf_hasher = new_hash()
        self._leaf_hasher.update(_LEAF_TAG)

    def leaf_count(self, length: int) -> int:
        """How many leaves a fragment of ``length`` bytes has (one, empty, for 0 bytes)."""
        return max(1, -(-length // self.leaf_size))

    def leaf_range(self, length: int, index: int) -> tuple[int, int]:
        """The byte range [start, end) of leaf ``index`` in a fragment of ``length`` bytes."""
        start = index * self.leaf_size
        return start, min(length, start + self.leaf_size)

    def fragment_id(self, data: Buffer) -> bytes:
        """The id of ``data``."""
        view = memoryview(data).cast("B")
        builder = _TreeBuilder(self)
        for start in range(0, self.leaf_count(len(view)) * self.leaf_size, self.leaf_size):
            builder.push(self.leaf_hash(view[start : start + self.leaf_size]))
        return self.bind(builder.root(), len(view))

    def stream(self) -> FragmentHasher:
        """A hasher fed in pieces of any size (for files): ``update`` then ``digest``."""
        return FragmentHasher(self)

    def audit_proof(self, data: Buffer, leaf_index: int) -> AuditProof:
        """The proof that ``data`` holds leaf ``leaf_index``.  Raises ValueError if there is no
        such leaf."""
        view = memoryview(data).cast("B")
        count = self.leaf_count(len(view))
        if type(leaf_index) is not int or not 0 <= leaf_index < count:
            raise ValueError(f"leaf {leaf_index!r} is not one of the {count} of this fragment")
        hashes = [
            self.leaf_hash(view[i * self.leaf_size : (i + 1) * self.leaf_size])
            for i in range(count)
        ]
        path: list[bytes] = []
        low, high = 0, count
        while high - low > 1:  # top down; the path is listed bottom up
            middle = low + _split(high - low)
            if leaf_index < middle:
                path.append(self._range_root(hashes, middle, high))
                high = middle
            else:
                path.append(self._range_root(hashes, low, middle))
                low = middle
        start, end = self.leaf_range(len(view), leaf_index)
        return AuditProof(bytes(view[start:end]), tuple(reversed(path)), len(view))

    def proof_error(self, expected_id: bytes, leaf_index: int, proof: AuditProof) -> str | None:
        """Why ``proof`` does not show leaf ``leaf_index`` of the fragment ``expected_id``, or
        None if it does."""
        count = self.leaf_count(proof.length)
        if type(leaf_index) is not int or not 0 <= leaf_index < count:
            return f"leaf {leaf_index} does not exist in a fragment of {proof.length} bytes"
        start, end = self.leaf_range(proof.length, leaf_index)
        if len(proof.leaf) != end - start:
            return f"leaf {leaf_index} is {len(proof.leaf)} bytes, it should be {end - start}"
        sides: list[bool] = []  # top down: is our leaf on the left of this split?
        low, high = 0, count
        while high - low > 1:
            middle = low + _split(high - low)
            sides.append(leaf_index < middle)
            low, high = (low, middle) if leaf_index < middle else (middle, high)
        if len(proof.path) != len(sides):
            return f"the path has {len(proof.path)} hashes, leaf {leaf_index} needs {len(sides)}"
        node = self.leaf_hash(proof.leaf)
        for on_left, sibling in zip(reversed(sides), proof.path, strict=True):
            node = self.node_hash(node, sibling) if on_left else self.node_hash(sibling, node)
        if self.bind(node, proof.length) != expected_id:
            return "the leaf and path do not lead to the fragment's id"
        return None

    # --- the tree's hashes ------------------------------------------------------------------

    def leaf_hash(self, leaf: Buffer) -> bytes:
        hasher = self._leaf_hasher.copy()
        hasher.update(leaf)
        return hasher.digest()

    def node_hash(self, left: bytes, right: bytes) -> bytes:
        hasher = self._new()
        hasher.update(_NODE_TAG + left + right)
        return hasher.digest()

    def bind(self, root: bytes, length: int) -> bytes:
        hasher = self._new()
        hasher.update(
            _ID_TAG + self.leaf_size.to_bytes(4, "big") + length.to_bytes(8, "big") + root
        )
        return hasher.digest()

    def _range_root(self, hashes: list[bytes], low: int, high: int) -> bytes:
        builder = _TreeBuilder(self)
        for leaf in hashes[low:high]:
            builder.push(leaf)
        return builder.root()


class _TreeBuilder:
    """Leaf hashes in, the root out: a stack of perfect subtrees (sizes strictly decreasing),
    folded right to left at the end, which gives the RFC 6962 shape in O(log n) memory."""

    __slots__ = ("_scheme", "_stack")

    def __init__(self, scheme: MerkleScheme) -> None:
        self._scheme = scheme
        self._stack: list[tuple[int, bytes]] = []

    def push(self, leaf_hash: bytes) -> None:
        size, node = 1, leaf_hash
        while self._stack and self._stack[-1][0] == size:
            _, left = self._stack.pop()
            size, node = 2 * size, self._scheme.node_hash(left, node)
        self._stack.append((size, node))

    def root(self) -> bytes:
        _, node = self._stack[-1]
        for _, left in reversed(self._stack[:-1]):
            node = self._scheme.node_hash(left, node)
        return node


class FragmentHasher:
    """The id of bytes given in pieces, in bounded memory (one leaf plus the stack)."""

    __slots__ = ("_builder", "_length", "_pending", "_scheme")

    def __init__(self, scheme: MerkleScheme) -> None:
        self._scheme = scheme
        self._builder = _TreeBuilder(scheme)
        self._pending = bytearray()
        self._length = 0

    def update(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        self._length += len(view)
        size = self._scheme.leaf_size
        if self._pending:
            taken = min(len(view), size - len(self._pending))
            self._pending += view[:taken]
            view = view[taken:]
            if len(self._pending) < size or not view:
                return  # a full pending leaf waits: it may be the last one
            self._builder.push(self._scheme.leaf_hash(self._pending))
            self._pending.clear()
        whole = (len(view) - 1) // size * size if view else 0  # keep the last leaf pending
        for start in range(0, whole, size):
            self._builder.push(self._scheme.leaf_hash(view[start : start + size]))
        self._pending += view[whole:]

    def digest(self) -> bytes:
        """The id of everything given so far (the hasher may go on being fed)."""
        builder = _TreeBuilder(self._scheme)
        builder._stack = list(self._builder._stack)
        builder.push(self._scheme.leaf_hash(self._pending))
        return self._scheme.bind(builder.root(), self._length)


def _split(count: int) -> int:
    """The largest power of two strictly below ``count`` (> 1)."""
    return 1 << ((count - 1).bit_length() - 1)


SCHEME = MerkleScheme(LEAF_SIZE, hashlib.sha256)


def fragment_id(data: Buffer) -> bytes:
    """The content address of ``data``."""
    return SCHEME.fragment_id(data)


def check_fragment(expected_id: bytes, data: Buffer) -> None:
    """Raise :class:`IntegrityError` unless ``data`` has the id ``expected_id``."""
    actual = SCHEME.fragment_id(data)
    if actual != expected_id:
        raise IntegrityError(
            f"fragment {expected_id.hex()[:16]} is corrupt: its bytes hash to {actual.hex()[:16]}"
        )


def audit_proof(data: Buffer, leaf_index: int) -> AuditProof:
    """The proof that ``data`` holds leaf ``leaf_index``.  Raises ValueError if it has no such
    leaf (see :func:`leaf_count`)."""
    return SCHEME.audit_proof(data, leaf_index)


def audit_proof_error(fragment_id: bytes, leaf_index: int, proof: AuditProof) -> str | None:
    """Why ``proof`` fails to show leaf ``leaf_index`` of fragment ``fragment_id``; None if it
    shows it."""
    return SCHEME.proof_error(fragment_id, leaf_index, proof)


def verify_audit_proof(fragment_id: bytes, leaf_index: int, proof: AuditProof) -> bool:
    """True if ``proof`` shows leaf ``leaf_index`` of fragment ``fragment_id``."""
    return SCHEME.proof_error(fragment_id, leaf_index, proof) is None


def leaf_count(length: int) -> int:
    """How many leaves (audit positions) a fragment of ``length`` bytes has."""
    return SCHEME.leaf_count(length)


def fragment_hasher() -> FragmentHasher:
    """A streaming hasher giving the same id as :func:`fragment_id` (for files)."""
    return SCHEME.stream()
