"""Length-prefixed frames over a byte stream, with no I/O.

Strategy: a frame is a 4-byte big-endian unsigned payload length, then the payload.  Like h11's
receive buffer, ``FrameDecoder`` takes whatever bytes the transport read (``feed``) and hands
back whole payloads (``next_frame``), returning ``None`` when it needs more.  The length is
checked against ``max_frame`` as soon as the header arrives, before any of the body is held, so
a peer cannot make us buffer more than one legal frame plus one read.  The reads are kept as
they came, in a queue, and a finished frame is joined from them in one copy: growing one
``bytearray`` instead copied a 1 MiB frame about eight times over as it grew (CPython moves
the whole buffer on each resize once its front was trimmed), which cost a node receiving
fragments more CPU than decrypting them.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Final

from p2pstore.errors import LocalProtocolError, RemoteProtocolError

FRAME_HEADER: Final = struct.Struct(">I")
MAX_FRAME_LIMIT: Final = (1 << 32) - 1
DEFAULT_MAX_FRAME: Final = 16 * 1024 * 1024 + 64 * 1024
"""Room for a 16 MiB fragment plus its envelope."""


def _check_max_frame(max_frame: int) -> None:
    if type(max_frame) is not int or not 0 <= max_frame <= MAX_FRAME_LIMIT:
        raise LocalProtocolError(
            f"max_frame must be an int in [0, {MAX_FRAME_LIMIT}], not {max_frame!r}"
        )


def frame_header(payload_length: int, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """The 4-byte header announcing a payload of ``payload_length`` bytes.

    Raises ``LocalProtocolError`` when the length is negative or above ``max_frame`` (the
    peer would drop the connection; send less, e.g. smaller fragments).
    """
    _check_max_frame(max_frame)
    if not 0 <= payload_length <= max_frame:
        raise LocalProtocolError(
            f"frame payload of {payload_length} bytes is outside [0, {max_frame}]: "
            "split the data into smaller messages"
        )
    return FRAME_HEADER.pack(payload_length)


class FrameDecoder:
    """Splits a byte stream into frame payloads.

    Call ``next_frame()`` until it returns ``None`` after each ``feed()``: then ``buffered``
    never exceeds ``max_frame + FRAME_HEADER.size`` plus the size of one feed.  After a
    ``RemoteProtocolError`` the stream is unusable: further input is discarded and every
    ``next_frame()`` raises again.
    """

    __slots__ = ("_buffered", "_error", "_max_frame", "_offset", "_pieces")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        _check_max_frame(max_frame)
        self._max_frame = max_frame
        self._pieces: deque[bytes | bytearray] = deque()
        self._offset = 0
        """Bytes of the first piece already returned."""
        self._buffered = 0
        self._error: str | None = None

    @property
    def max_frame(self) -> int:
        return self._max_frame

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return self._buffered

    @property
    def announced(self) -> int | None:
        """The payload length the next frame's header announced, or None before its header.

        Lets a transport reserve buffer room for a large frame before reading its body."""
        if self._error is not None or self._buffered < FRAME_HEADER.size:
            return None
        length: int = FRAME_HEADER.unpack(self._peek(FRAME_HEADER.size))[0]
        return length

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the stream (kept as given: the caller must not change a
        bytearray it fed)."""
        if self._error is None and data:
            piece = data if isinstance(data, bytes | bytearray) else bytes(data)
            self._pieces.append(piece)
            self._buffered += len(piece)

    def next_frame(self) -> bytes | None:
        """The next complete payload, or ``None`` if more bytes are needed.

        Raises ``RemoteProtocolError`` as soon as a header announces more than ``max_frame``.
        """
        if self._error is not None:
            raise RemoteProtocolError(self._error)
        header_size = FRAME_HEADER.size
        if self._buffered < header_size:
            return None
        (length,) = FRAME_HEADER.unpack(self._peek(header_size))
        if length > self._max_frame:
            self._error = (
                f"peer announced a frame of {length} bytes, more than the limit of "
                f"{self._max_frame}: dropping the connection"
            )
            self._pieces.clear()
            self._offset = self._buffered = 0
            raise RemoteProtocolError(self._error)
        if self._buffered < header_size + length:
            return None
        self._take(header_size)
        return self._take(length)

    def _peek(self, size: int) -> bytes:
        """The next ``size`` buffered bytes, left in place (``size`` <= ``buffered``)."""
        first = self._pieces[0]
        if len(first) - self._offset >= size:
            return bytes(first[self._offset : self._offset + size])
        return b"".join(self._slices(size))

    def _take(self, size: int) -> bytes:
        """Remove and return the next ``size`` buffered bytes: each byte is copied once, so a
        frame of many reads costs linear time, and many frames in one read too."""
        if not size:
            return b""
        first = self._pieces[0]
        offset = self._offset
        if len(first) - offset >= size:
            if offset == 0 and len(first) == size and isinstance(first, bytes):
                frame = first  # a whole piece: no copy
            else:
                with memoryview(first) as view, view[offset : offset + size] as body:
                    frame = bytes(body)
        else:
            frame = b"".join(self._slices(size))
        self._buffered -= size
        while size:
            available = len(self._pieces[0]) - self._offset
            if available > size:
                self._offset += size
                break
            self._pieces.popleft()
            self._offset = 0
            size -= available
        return frame

    def _slices(self, size: int) -> list[memoryview]:
        """Views of the next ``size`` buffered bytes, piece by piece (released by the caller's
        join; they pin their pieces only until then)."""
        views = []
        offset = self._offset
        for piece in self._pieces:
            view = memoryview(piece)[offset : offset + size]
            views.append(view)
            size -= len(view)
            offset = 0
            if not size:
                break
        return views

    def at_frame_boundary(self) -> bool:
        """True when the bytes held are whole frames only (none, usually).

        At end of stream, ``False`` means the peer closed mid-frame: the caller should raise
        ``RemoteProtocolError`` for a truncated frame.
        """
        if self._error is not None:
            return False
        buffer = b"".join(self._slices(self._buffered)) if self._buffered else b""
        offset = 0
        header_size = FRAME_HEADER.size
        while offset + header_size <= len(buffer):
            (length,) = FRAME_HEADER.unpack_from(buffer, offset)
            offset += header_size + length
        return offset == len(buffer)

    def check_eof(self) -> None:
        """Call when the stream ended.  Raises ``RemoteProtocolError`` if it ended mid-frame."""
        if not self.at_frame_boundary():
            raise RemoteProtocolError(
                f"connection closed in the middle of a frame ({self.buffered} bytes unread)"
            )
