"""Multipart parts wait in the gateway's spool until completed: checked before they count,
gone with their upload, kept across a restart, bounded (past the bound a part goes to the blob
store as before), and a completion that takes long keeps the client waiting the way S3 does."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import pytest
import trio
from botocore.exceptions import ClientError
from gateway_harness import running_gateway
from test_gateway_requests import code, raw, signed

from p2pstore.errors import PutFailed
from p2pstore.gateway import multipart_ops
from p2pstore.gateway.backend import Blob, ObjectMeta
from p2pstore.gateway.blobs import MemoryBlobs
from p2pstore.gateway.s3xml import XML_DECLARATION
from p2pstore.gateway.spool import SPOOLED
from p2pstore.gateway.uploads import UploadStore

MiB = 1024 * 1024


def spooled_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def spool_part(uploads: UploadStore, data: bytes) -> Blob:
    md5 = hashlib.md5()
    writer = uploads.spool.writer(len(data), md5)
    assert writer is not None
    for start in range(0, len(data), 300_000):
        await writer.write(data[start : start + 300_000])
    blob = await writer.close()
    assert md5.digest() == hashlib.md5(data).digest()
    return blob


async def test_spooled_parts_live_as_long_as_their_upload_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    uploads = UploadStore(tmp_path / "uploads.sqlite", clock=lambda: 1000.0, spool=spool)
    upload = uploads.create("uni", "b", "k", ObjectMeta(""))
    first = await spool_part(uploads, os.urandom(3 * MiB))
    uploads.put_part(upload, 1, first, b"1" * 16)
    again = await spool_part(uploads, b"x" * 1000)
    uploads.put_part(upload, 1, again, b"2" * 16)  # the part uploaded again replaces it
    kept = await spool_part(uploads, b"y" * 10)
    uploads.put_part(upload, 2, kept, b"3" * 16)
    names = sorted(b.ref.removeprefix(SPOOLED) for b in (again, kept))
    assert spooled_files(spool) == names
    assert uploads.spool.used == 1010
    (spool / ("ab" * 16)).write_bytes(b"half")  # a write cut by a crash
    (spool / "notes.txt").write_bytes(b"not ours")
    uploads.close()

    uploads = UploadStore(tmp_path / "uploads.sqlite", clock=lambda: 1000.0, spool=spool)
    assert spooled_files(spool) == sorted([*names, "notes.txt"])  # the cut part file is gone
    (spool / "notes.txt").unlink()
    assert uploads.spool.used == 1010
    reader = uploads.spool.reader([p.blob for p in uploads.parts(upload)])
    assert reader.read() == b"x" * 1000 + b"y" * 10
    reader.close()
    uploads.finish(upload)
    assert spooled_files(spool) == []
    assert uploads.spool.used == 0
    uploads.close()


async def test_the_spool_is_bounded_and_a_failed_write_gives_its_room_back(
    tmp_path: Path,
) -> None:
    uploads = UploadStore(":memory:", clock=lambda: 0.0, spool=tmp_path, spool_limit=1000)
    md5 = hashlib.md5()
    assert uploads.spool.writer(1001, md5) is None
    writer = uploads.spool.writer(600, md5)
    assert writer is not None
    assert uploads.spool.writer(600, md5) is None
    await writer.write(b"z" * 100)
    with pytest.raises(Exception, match="ended after 100 of 600"):
        await writer.close()
    writer.discard()
    assert spooled_files(tmp_path) == []
    assert uploads.spool.writer(600, md5) is not None
    uploads.close()


async def test_a_part_counts_only_once_its_body_checked_out(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        s3 = gw.s3
        spool = gw.app.backend.uploads.spool.directory  # type: ignore[attr-defined]
        await s3.create_bucket(Bucket="bkt")
        uid = (await s3.create_multipart_upload(Bucket="bkt", Key="k"))["UploadId"]
        path = f"/bkt/k?partNumber=1&uploadId={uid}"
        headers, _ = signed(gw, "PUT", path, hashlib.sha256(b"signed").hexdigest())
        answer, text = await raw(gw, "PUT", path, headers, b"sent")
        assert answer == 400 and b"XAmzContentSHA256Mismatch" in text
        wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        with pytest.raises(ClientError) as caught:
            await s3.upload_part(
                Bucket="bkt", Key="k", UploadId=uid, PartNumber=1, Body=b"data", ContentMD5=wrong
            )
        assert code(caught.value) == "BadDigest"
        assert (await s3.list_parts(Bucket="bkt", Key="k", UploadId=uid)).get("Parts", []) == []
        assert spooled_files(spool) == []
        await s3.upload_part(Bucket="bkt", Key="k", UploadId=uid, PartNumber=1, Body=b"data")
        assert len(spooled_files(spool)) == 1
        await s3.abort_multipart_upload(Bucket="bkt", Key="k", UploadId=uid)
        assert spooled_files(spool) == []


async def test_parts_past_the_spool_limit_are_stored_as_blobs_of_their_own(
    tmp_path: Path,
) -> None:
    blobs = MemoryBlobs()
    async with running_gateway(tmp_path, blobs) as gw:
        s3 = gw.s3
        gw.app.backend.uploads.spool.limit = 6 * MiB  # type: ignore[attr-defined]
        await s3.create_bucket(Bucket="bkt")
        uid = (await s3.create_multipart_upload(Bucket="bkt", Key="k"))["UploadId"]
        data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(5 * MiB), b"end"]
        tags = []
        for number, part in enumerate(data, 1):
            answer = await s3.upload_part(
                Bucket="bkt", Key="k", UploadId=uid, PartNumber=number, Body=part
            )
            tags.append(answer["ETag"])
        assert len(blobs.data) == 2  # parts 2 and 3 found no room
        chosen = [{"PartNumber": n, "ETag": t} for n, t in enumerate(tags, 1)]
        await s3.complete_multipart_upload(
            Bucket="bkt", Key="k", UploadId=uid, MultipartUpload={"Parts": chosen}
        )
        assert len(blobs.data) == 4  # part 1 and part 4, each a run of spooled parts
        body, _ = await s3.get_bytes(Bucket="bkt", Key="k")
        assert body == b"".join(data)


class SlowBlobs(MemoryBlobs):
    """Completing takes ``delay`` seconds, then stores, or fails as the mesh can."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.fail = False

    async def store_file(self, source: BinaryIO, size: int) -> Blob:
        await trio.sleep(self.delay)
        if self.fail:
            raise PutFailed("the mesh took too few records", chunk=None)
        return await super().store_file(source, size)


async def test_a_long_completion_answers_200_at_once_then_spaces_then_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(multipart_ops, "KEEPALIVE_AFTER", 0.2)
    monkeypatch.setattr(multipart_ops, "KEEPALIVE_EVERY", 0.1)
    blobs = SlowBlobs(1.0)
    async with running_gateway(tmp_path, blobs) as gw:
        s3 = gw.s3
        await s3.create_bucket(Bucket="bkt")
        uid = (await s3.create_multipart_upload(Bucket="bkt", Key="k"))["UploadId"]
        part = await s3.upload_part(Bucket="bkt", Key="k", UploadId=uid, PartNumber=1, Body=b"a")
        document = (
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
            f"<ETag>{part['ETag']}</ETag></Part></CompleteMultipartUpload>"
        ).encode()
        path = f"/bkt/k?uploadId={uid}"
        headers, _ = signed(gw, "POST", path, hashlib.sha256(document).hexdigest())
        answer, text = await raw(gw, "POST", path, headers, document)
        assert answer == 200
        assert text.startswith(XML_DECLARATION + b" ")
        assert b"<ETag>" in text and b"CompleteMultipartUploadResult" in text
        body, _ = await s3.get_bytes(Bucket="bkt", Key="k")
        assert body == b"a"

        # Failing once the 200 went out: an <Error> document, which boto3 raises.
        blobs.fail = True
        uid = (await s3.create_multipart_upload(Bucket="bkt", Key="f"))["UploadId"]
        part = await s3.upload_part(Bucket="bkt", Key="f", UploadId=uid, PartNumber=1, Body=b"b")
        with pytest.raises(ClientError) as caught:
            await s3.complete_multipart_upload(
                Bucket="bkt",
                Key="f",
                UploadId=uid,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
            )
        assert code(caught.value) == "ServiceUnavailable"
        with pytest.raises(ClientError):
            await s3.head_object(Bucket="bkt", Key="f")
        listed = await s3.list_parts(Bucket="bkt", Key="f", UploadId=uid)
        assert [p["PartNumber"] for p in listed["Parts"]] == [1]  # the client may try again
