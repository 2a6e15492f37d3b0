"""The handlers of multipart uploads: create, upload a part (from the body or copied from an
object), complete, abort, and list parts and uploads in progress.

A part is spooled to the gateway's disk when it arrives (:mod:`p2pstore.gateway.spool`; an
object of its own in the mesh when the spool is full); completing an upload stores the spooled
parts in the mesh as one object and commits the blobs under the name, in order.  That can take
as long as a put of the whole object, so past ``KEEPALIVE_AFTER`` seconds the answer starts as
S3's does: status 200 and the XML declaration at once, a space every ``KEEPALIVE_EVERY``
seconds (clients' read timeouts do not fire), then the result, or an ``<Error>`` document,
which S3 clients read as the error it is.  A copied part (UploadPartCopy) streams the source's
range from the mesh into the spool (or, through a bounded channel, into a new blob), so the
gateway holds a few pieces of it at a time whatever its size.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import trio

from p2pstore.errors import P2PStoreError
from p2pstore.gateway import etag
from p2pstore.gateway.app import Call, Handler, Response, leaf_error
from p2pstore.gateway.backend import Blob, ObjectInfo, ObjectMeta, Part, Upload, Write
from p2pstore.gateway.object_ops import (
    MAX_PARTS,
    MAX_PUT,
    MIN_PART,
    _copy_source,
    _object_meta,
    _store_checked,
    _version_header,
    read_object,
)
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.s3xml import (
    MAX_XML_BYTES,
    XML_DECLARATION,
    Tree,
    error_document,
    iso8601,
    parse_complete_multipart,
    render,
)

log = logging.getLogger(__name__)

MAX_UPLOADS = 1000
PIPE_PIECES = 4
"""Pieces of a copied range in flight between the reader and the store."""
KEEPALIVE_AFTER = 10.0
KEEPALIVE_EVERY = 10.0
PIECE = 1 << 20


async def create_multipart_upload(call: Call) -> Response:
    upload = await call.backend.create_upload(
        call.tenant, call.bucket, call.object_key, _object_meta(call, "")
    )
    tree: list[Tree] = [
        ("Bucket", call.bucket),
        ("Key", call.object_key),
        ("UploadId", upload.upload_id),
    ]
    return Response(body=render("InitiateMultipartUploadResult", tree))


def _part_number(call: Call) -> int:
    text = call.param("partNumber") or ""
    if not text.isdigit() or not 1 <= int(text) <= MAX_PARTS:
        raise S3Error("InvalidArgument", f"partNumber must be from 1 to {MAX_PARTS}")
    return int(text)


async def _upload(call: Call) -> Upload:
    return await call.backend.upload(
        call.tenant, call.bucket, call.object_key, call.param("uploadId") or ""
    )


async def upload_part(call: Call) -> Response:
    number = _part_number(call)
    upload = await _upload(call)
    size = call.body.require_size(MAX_PUT)
    promised = etag.expected_md5(call.header("content-md5"))
    writer = call.backend.part_writer(size, call.body.hashes)
    if writer is None:  # no room in the spool: a blob of its own
        blob, digest = await _store_checked(call, MAX_PUT)
    else:
        call.body.take_hashes()  # the writer hashes what it writes, in its worker thread
        try:
            while piece := await call.body.read(PIECE):
                await writer.write(piece)
            blob = await writer.close()
            await call.body.finish()
            digest = call.body.md5.digest()
            etag.check_md5(promised, digest)
        except BaseException:
            writer.discard()
            raise
    await call.backend.put_part(upload, number, blob, digest)
    return Response(headers=[("ETag", etag.single_part(digest))])


def _check_parts(named: Sequence[tuple[int, str]], stored: dict[int, tuple[int, bytes]]) -> None:
    numbers = [number for number, _ in named]
    if numbers != sorted(set(numbers)):
        raise S3Error("InvalidPartOrder", "the parts must be listed in ascending order")
    for position, (number, tag) in enumerate(named):
        if number not in stored or etag.part_md5(tag) != stored[number][1]:
            raise S3Error("InvalidPart", f"part {number} was not uploaded or its ETag differs")
        if position < len(named) - 1 and stored[number][0] < MIN_PART:
            raise S3Error(
                "EntityTooSmall", f"part {number} is smaller than the {MIN_PART}-byte minimum"
            )


async def complete_multipart_upload(call: Call) -> Response:
    upload = await _upload(call)
    named = parse_complete_multipart(await call.body.read_all(MAX_XML_BYTES))
    parts = {p.number: p for p in await call.backend.parts(upload)}
    _check_parts(
        [(p.number, p.etag) for p in named],
        {n: (p.blob.size, p.md5) for n, p in parts.items()},
    )
    chosen = [parts[p.number] for p in named]
    response = Response(headers=[("Content-Type", "application/xml")], late=True)

    async def complete(write: Write) -> None:
        done = trio.Event()
        answer: list[bytes] = []

        async def work() -> None:
            try:
                answer.append(await _complete(call, upload, chosen, response))
            except (P2PStoreError, BaseExceptionGroup) as error:
                answer.append(_error_answer(error, response, call))
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(work)
            with trio.move_on_after(KEEPALIVE_AFTER):
                await done.wait()
            if not done.is_set():  # from now on the status is 200, whatever happens
                response.status = 200
                await write(XML_DECLARATION)
                while not done.is_set():
                    with trio.move_on_after(KEEPALIVE_EVERY):
                        await done.wait()
                    if not done.is_set():
                        await write(b" ")
                answer[0] = answer[0].removeprefix(XML_DECLARATION)
        await write(answer[0])

    response.stream = complete
    return response


async def _complete(call: Call, upload: Upload, chosen: list[Part], response: Response) -> bytes:
    tag = etag.multipart([p.md5 for p in chosen])
    meta = ObjectMeta(tag, upload.meta.content_type, upload.meta.metadata)
    segments = await call.backend.assemble(chosen)
    info = await call.backend.commit(call.tenant, call.bucket, call.object_key, segments, meta)
    await call.backend.finish_upload(upload)
    response.headers += _version_header(info)  # sent only if the answer had not begun
    tree: list[Tree] = [
        ("Location", f"/{call.bucket}/{call.object_key}"),
        ("Bucket", call.bucket),
        ("Key", call.object_key),
        ("ETag", tag),
    ]
    return render("CompleteMultipartUploadResult", tree)


def _error_answer(error: BaseException, response: Response, call: Call) -> bytes:
    """The ``<Error>`` document (and status, if not yet sent) for a failed completion."""
    leaf = leaf_error(error)
    if not isinstance(leaf, P2PStoreError):
        raise error
    if not isinstance(leaf, S3Error):
        log.warning(
            "CompleteMultipartUpload failed below the gateway: %s",
            leaf,
            extra={"event": "gateway_backend_error", "operation": "CompleteMultipartUpload"},
        )
        leaf = S3Error("ServiceUnavailable", f"the mesh could not serve this: {leaf}")
    response.status = leaf.status
    return error_document(leaf, call.request_id)


async def abort_multipart_upload(call: Call) -> Response:
    await call.backend.finish_upload(await _upload(call))
    return Response(204)


async def list_parts(call: Call) -> Response:
    upload = await _upload(call)
    marker = int(call.param("part-number-marker") or 0)
    limit = min(int(call.param("max-parts") or 1000), 1000)
    parts = [p for p in await call.backend.parts(upload) if p.number > marker]
    tree: list[Tree] = [
        ("Bucket", call.bucket),
        ("Key", call.object_key),
        ("UploadId", upload.upload_id),
        ("PartNumberMarker", marker),
        ("MaxParts", limit),
        ("IsTruncated", len(parts) > limit),
    ]
    if len(parts) > limit:
        tree.append(("NextPartNumberMarker", parts[limit - 1].number))
    for part in parts[:limit]:
        tree.append(
            (
                "Part",
                [
                    ("PartNumber", part.number),
                    ("LastModified", iso8601(part.modified)),
                    ("ETag", etag.single_part(part.md5)),
                    ("Size", part.blob.size),
                ],
            )
        )
    return Response(body=render("ListPartsResult", tree))


def _copy_range(header: str | None, size: int) -> tuple[int, int]:
    """``[start, stop)`` of ``x-amz-copy-source-range`` (``bytes=first-last``), or the whole."""
    if header is None:
        return 0, size
    first, _, last = header.strip().removeprefix("bytes=").partition("-")
    if not (first.isdigit() and last.isdigit()) or int(first) > int(last):
        raise S3Error("InvalidArgument", "x-amz-copy-source-range must be bytes=first-last")
    if int(last) >= size:
        raise S3Error("InvalidRange", f"the copy source is {size} bytes")
    return int(first), int(last) + 1


class _Pipe:
    """A request body fed by a reader task: what the store reads, the reader wrote."""

    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self.receive = receive
        self.pending = b""
        self.md5 = hashlib.md5()  # noqa: S324 -- S3's ETag

    async def read(self, limit: int) -> bytes:
        if not self.pending:
            try:
                self.pending = await self.receive.receive()
            except trio.EndOfChannel:
                return b""
        piece, self.pending = self.pending[:limit], self.pending[limit:]
        self.md5.update(piece)
        return piece


def _check_source(call: Call, source: ObjectInfo) -> None:
    if_match = call.header("x-amz-copy-source-if-match")
    if if_match is not None and not etag.matches(if_match, source.meta.etag):
        raise S3Error("PreconditionFailed", "x-amz-copy-source-if-match does not match")
    if_none = call.header("x-amz-copy-source-if-none-match")
    if if_none is not None and etag.matches(if_none, source.meta.etag):
        raise S3Error("PreconditionFailed", "x-amz-copy-source-if-none-match matches")


async def _copy_to_blob(
    call: Call, source: ObjectInfo, start: int, stop: int
) -> tuple[Blob, bytes]:
    send, receive = trio.open_memory_channel[bytes](PIPE_PIECES)
    pipe = _Pipe(receive)

    async def feed() -> None:
        async with send:
            await read_object(call, source, start, stop, send.send)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        blob = await call.backend.store(pipe, stop - start)
        nursery.cancel_scope.cancel()  # the reader is done, or the store refused early
    return blob, pipe.md5.digest()


async def upload_part_copy(call: Call) -> Response:
    number = _part_number(call)
    upload = await _upload(call)
    bucket, key, version = _copy_source(call)
    source = await call.backend.head(call.tenant, bucket, key, version)
    _check_source(call, source)
    start, stop = _copy_range(call.header("x-amz-copy-source-range"), source.size)
    if stop - start > MAX_PUT:
        raise S3Error("InvalidRequest", f"a part is at most {MAX_PUT} bytes")
    md5 = hashlib.md5()  # noqa: S324 -- S3's ETag
    writer = call.backend.part_writer(stop - start, md5)
    if writer is None:
        blob, digest = await _copy_to_blob(call, source, start, stop)
    else:
        try:
            await read_object(call, source, start, stop, writer.write)
            blob, digest = await writer.close(), md5.digest()
        except BaseException:
            writer.discard()
            raise
    await call.backend.put_part(upload, number, blob, digest)
    tree: list[Tree] = [("LastModified", iso8601(source.modified)),
                        ("ETag", etag.single_part(digest))]  # fmt: skip
    return Response(body=render("CopyPartResult", tree))


async def list_multipart_uploads(call: Call) -> Response:
    prefix = call.param("prefix") or ""
    key_marker = call.param("key-marker") or ""
    id_marker = call.param("upload-id-marker") or "" if key_marker else ""
    text = call.param("max-uploads") or str(MAX_UPLOADS)
    if not text.isdigit():
        raise S3Error("InvalidArgument", "max-uploads must be a non-negative integer")
    limit = min(int(text), MAX_UPLOADS)
    uploads = await call.backend.list_uploads(
        call.tenant, call.bucket, prefix, (key_marker, id_marker), limit + 1
    )
    truncated = len(uploads) > limit
    owner: list[Tree] = [("ID", call.tenant), ("DisplayName", call.tenant)]
    tree: list[Tree] = [
        ("Bucket", call.bucket),
        ("KeyMarker", key_marker),
        ("UploadIdMarker", id_marker),
        ("Prefix", prefix),
        ("MaxUploads", limit),
        ("IsTruncated", truncated),
    ]
    if truncated:
        last = uploads[limit - 1]
        tree += [("NextKeyMarker", last.key), ("NextUploadIdMarker", last.upload_id)]
    for upload in uploads[:limit]:
        tree.append(("Upload", [
            ("Key", upload.key),
            ("UploadId", upload.upload_id),
            ("Initiator", owner),
            ("Owner", owner),
            ("StorageClass", "STANDARD"),
            ("Initiated", iso8601(upload.initiated)),
        ]))  # fmt: skip
    return Response(body=render("ListMultipartUploadsResult", tree))


HANDLERS: dict[str, Handler] = {
    "CreateMultipartUpload": create_multipart_upload,
    "UploadPart": upload_part,
    "UploadPartCopy": upload_part_copy,
    "CompleteMultipartUpload": complete_multipart_upload,
    "AbortMultipartUpload": abort_multipart_upload,
    "ListParts": list_parts,
    "ListMultipartUploads": list_multipart_uploads,
}
