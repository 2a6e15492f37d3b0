"""Where the gateway's bytes go: the mesh through the native client, or memory (tests).

A body streams into :meth:`Client.put` through a file-like reader that the client's encoding
thread pulls from (``trio.from_thread``), so the gateway holds about ``chunks_in_flight`` chunks
of an upload, never the whole object.  A ranged read fetches and decodes only the chunks that
overlap the range, a few at a time, and hands them out in order.  A multipart object's blob is
its segment list (:mod:`p2pstore.codec.segments`): a read opens the list (kept for the next
ranged reads: a cap's content never changes) and reads the parts the range covers.
"""

from __future__ import annotations

import io
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import BinaryIO

import trio

from p2pstore.codec import ObjectDecoder, ReadCap
from p2pstore.codec.manifest import max_object_size
from p2pstore.codec.segments import pack_segments, unpack_segments
from p2pstore.core.rules import CodingRule
from p2pstore.errors import P2PStoreError
from p2pstore.gateway.backend import Blob, Body, Write
from p2pstore.gateway.mesh_entries import LIST_PREFIX
from p2pstore.gateway.s3errors import S3Error
from p2pstore.net.client import Client

PIECE = 256 * 1024
"""Bytes handed to ``write`` at a time by the memory store."""
LISTS_KEPT = 32
"""Segment lists kept open (up to 10,000 caps each, about 2 MB)."""


class _BodyReader(io.RawIOBase):
    """A blocking file over an async body, read from a worker thread of trio's."""

    def __init__(self, body: Body) -> None:
        self.body = body
        self.failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise io.UnsupportedOperation("the body is read in chunks")
        try:
            return trio.from_thread.run(self._read_exactly, size)
        except BaseException as exc:
            self.failure = exc
            raise

    async def _read_exactly(self, size: int) -> bytes:
        pieces: list[bytes] = []
        wanted = size
        while wanted:
            piece = await self.body.read(wanted)
            if not piece:
                break
            pieces.append(piece)
            wanted -= len(piece)
        return b"".join(pieces)


class MeshBlobs:
    """Blobs are objects in the mesh (random keys), referenced by their read caps."""

    def __init__(self, client: Client, rule: CodingRule) -> None:
        if not client.settings.in_threads:
            raise ValueError("the gateway streams bodies from the client's encoding threads")
        self.client = client
        self.rule = rule
        self.max_blob = max_object_size(client.settings.chunk_size, rule.n)
        self._lists: OrderedDict[str, list[tuple[str, int]]] = OrderedDict()

    async def store(self, body: Body, size: int) -> Blob:
        if size == 0:
            if await body.read(1):
                raise S3Error("IncompleteBody", "the body is longer than declared")
            return Blob("", 0)
        reader = _BodyReader(body)
        try:
            result = await self.client.put(reader, size, self.rule)  # type: ignore[arg-type]
        except (P2PStoreError, BaseExceptionGroup):
            if isinstance(reader.failure, S3Error):
                raise reader.failure from None
            raise
        if await body.read(1):
            raise S3Error("IncompleteBody", "the body is longer than declared")
        return Blob(result.read_cap.to_string(), size)

    async def store_file(self, source: BinaryIO, size: int) -> Blob:
        if size == 0:
            return Blob("", 0)
        try:
            result = await self.client.put(source, size, self.rule)
        except BaseExceptionGroup as group:  # what reading the source raised, in a nursery
            found, _ = group.split(S3Error)
            if found is not None:
                raise _first(found) from None
            raise
        return Blob(result.read_cap.to_string(), size)

    async def segment_list(self, segments: Sequence[Blob]) -> tuple[str, int]:
        """The cap a name's entry opens for ``segments``, and their count (0: a plain object):
        several parts are written as a segment list; a copied multipart object keeps its own."""
        if len(segments) == 1:
            ref = segments[0].ref
            if not ref.startswith(LIST_PREFIX):
                return ref, 0
            listed = ref.removeprefix(LIST_PREFIX)
            return listed, len(await self._segments(listed))
        data = pack_segments([(s.ref, s.size) for s in segments])
        put = await self.client.put(io.BytesIO(data), len(data), self.rule)
        return put.read_cap.to_string(), len(segments)

    async def caps_of(self, cap: str, parts: int) -> list[str]:
        """Every object a name's entry keeps: the cap it opens, and its segments' if a list."""
        if not cap:
            return []
        return [cap, *(c for c, _ in await self._segments(cap))] if parts else [cap]

    async def _segments(self, cap: str) -> list[tuple[str, int]]:
        if cap in self._lists:
            self._lists.move_to_end(cap)
            return self._lists[cap]
        pieces: list[bytes] = []

        async def keep(data: bytes) -> None:
            pieces.append(data)

        await self.client.get(ReadCap.parse(cap), keep)
        listed = self._lists[cap] = unpack_segments(b"".join(pieces))
        while len(self._lists) > LISTS_KEPT:
            self._lists.popitem(last=False)
        return listed

    async def read(self, blob: Blob, start: int, stop: int, write: Write) -> None:
        if start >= stop:
            return
        if blob.ref.startswith(LIST_PREFIX):
            offset = 0
            for part, size in await self._segments(blob.ref.removeprefix(LIST_PREFIX)):
                low, high = max(start, offset), min(stop, offset + size)
                if low < high:
                    await self.read(Blob(part, size), low - offset, high - offset, write)
                offset += size
            return
        cap = ReadCap.parse(blob.ref)
        client = self.client
        manifest = await client.fetch_manifest(cap.object_id)
        placement = await client.fetch_placement(cap.object_id, manifest)
        decoder = ObjectDecoder(manifest, cap.key)
        size = manifest.chunk_size
        indices = range(start // size, (stop - 1) // size + 1)
        results: dict[int, bytes] = {}
        ready = {index: trio.Event() for index in indices}
        window = trio.Semaphore(client.settings.chunks_in_flight)

        async def fetch_one(index: int) -> None:
            fragments = await client.fetch_chunk(manifest, placement, index)
            results[index] = await client.run_sync(decoder.decode_chunk, index, fragments)
            ready[index].set()

        async def write_in_order() -> None:
            for index in indices:
                await ready[index].wait()
                data = results.pop(index)
                base = index * size
                await write(data[max(0, start - base) : stop - base])
                window.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_in_order)
            for index in indices:
                await window.acquire()
                nursery.start_soon(fetch_one, index)


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


class MemoryBlobs:
    """Blobs in a dict: for tests of everything above the mesh."""

    max_blob = 1 << 40

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self._ids = itertools.count()

    async def store_file(self, source: BinaryIO, size: int) -> Blob:
        data = await trio.to_thread.run_sync(source.read, size + 1)
        if len(data) != size:
            raise S3Error("InternalError", f"{len(data)} bytes were read, not {size}")
        ref = f"mem-{next(self._ids)}"
        self.data[ref] = data
        return Blob(ref, size)

    async def store(self, body: Body, size: int) -> Blob:
        pieces, got = [], 0
        while piece := await body.read(PIECE):
            got += len(piece)
            if got > size:
                raise S3Error("IncompleteBody", "the body is longer than declared")
            pieces.append(piece)
        if got != size:
            raise S3Error("IncompleteBody", f"the body ended after {got} of {size} bytes")
        ref = f"mem-{next(self._ids)}"
        self.data[ref] = b"".join(pieces)
        return Blob(ref, size)

    async def read(self, blob: Blob, start: int, stop: int, write: Write) -> None:
        data = self.data[blob.ref] if blob.size else b""
        for offset in range(start, stop, PIECE):
            await write(data[offset : min(stop, offset + PIECE)])
