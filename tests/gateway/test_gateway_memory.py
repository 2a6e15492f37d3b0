"""boto3 against the gateway over in-memory blobs: the S3 surface, fast."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from gateway_harness import running_gateway

from p2pstore.gateway.blobs import MemoryBlobs

MiB = 1024 * 1024


def code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


async def test_buckets_objects_and_listing(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        s3 = gw.s3
        await s3.create_bucket(Bucket="photos")
        await s3.head_bucket(Bucket="photos")
        assert [b["Name"] for b in (await s3.list_buckets())["Buckets"]] == ["photos"]
        data = os.urandom(300_000)
        put = await s3.put_object(
            Bucket="photos",
            Key="2026/a b+c.jpg",
            Body=data,
            ContentType="image/jpeg",
            Metadata={"camera": "x100"},
        )
        assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        body, got = await s3.get_bytes(Bucket="photos", Key="2026/a b+c.jpg")
        assert body == data
        assert got["ContentType"] == "image/jpeg"
        assert got["Metadata"] == {"camera": "x100"}
        head = await s3.head_object(Bucket="photos", Key="2026/a b+c.jpg")
        assert head["ContentLength"] == len(data)
        body, ranged = await s3.get_bytes(
            Bucket="photos", Key="2026/a b+c.jpg", Range="bytes=100-199"
        )
        assert body == data[100:200]
        assert ranged["ContentRange"] == f"bytes 100-199/{len(data)}"
        body, _ = await s3.get_bytes(Bucket="photos", Key="2026/a b+c.jpg", Range="bytes=-10")
        assert body == data[-10:]
        for name in ("2026/b", "2025/x", "top", "2026/sub/c"):
            await s3.put_object(Bucket="photos", Key=name, Body=b"x")
        listing = await s3.list_objects_v2(Bucket="photos", Delimiter="/")
        assert [c["Prefix"] for c in listing["CommonPrefixes"]] == ["2025/", "2026/"]
        assert [o["Key"] for o in listing["Contents"]] == ["top"]
        listing = await s3.list_objects_v2(Bucket="photos", Prefix="2026/", Delimiter="/")
        assert [o["Key"] for o in listing["Contents"]] == ["2026/a b+c.jpg", "2026/b"]
        assert [c["Prefix"] for c in listing["CommonPrefixes"]] == ["2026/sub/"]
        pages = [
            [o["Key"] for o in page.get("Contents", [])] async for page in _pages(s3, "photos", 2)
        ]
        assert pages == [["2025/x", "2026/a b+c.jpg"], ["2026/b", "2026/sub/c"], ["top"]]
        after = await s3.list_objects_v2(Bucket="photos", StartAfter="2026/b")
        assert [o["Key"] for o in after["Contents"]] == ["2026/sub/c", "top"]
        v1 = await s3.list_objects(Bucket="photos", Prefix="2026/")
        assert len(v1["Contents"]) == 3
        await s3.delete_object(Bucket="photos", Key="top")
        with pytest.raises(ClientError) as caught:
            await s3.get_object(Bucket="photos", Key="top")
        assert code(caught.value) == "NoSuchKey"
        with pytest.raises(ClientError) as caught:
            await s3.delete_bucket(Bucket="photos")
        assert code(caught.value) == "BucketNotEmpty"
        deleted = await s3.delete_objects(
            Bucket="photos",
            Delete={
                "Objects": [
                    {"Key": k} for k in ("2026/a b+c.jpg", "2026/b", "2025/x", "2026/sub/c")
                ]
            },
        )
        assert len(deleted["Deleted"]) == 4
        await s3.delete_bucket(Bucket="photos")
        with pytest.raises(ClientError) as caught:
            await s3.head_bucket(Bucket="photos")
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def _pages(s3, bucket: str, size: int):  # type: ignore[no-untyped-def]
    token = None
    while True:
        kwargs = {"Bucket": bucket, "MaxKeys": size}
        if token:
            kwargs["ContinuationToken"] = token
        page = await s3.list_objects_v2(**kwargs)
        yield page
        if not page["IsTruncated"]:
            return
        token = page["NextContinuationToken"]


async def test_multipart_upload(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        s3 = gw.s3
        await s3.create_bucket(Bucket="big")
        upload = await s3.create_multipart_upload(Bucket="big", Key="f", ContentType="a/b")
        uid = upload["UploadId"]
        parts_data = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]
        etags = []
        for number, data in enumerate(parts_data, 1):
            part = await s3.upload_part(
                Bucket="big", Key="f", UploadId=uid, PartNumber=number, Body=data
            )
            etags.append(part["ETag"])
        listed = await s3.list_parts(Bucket="big", Key="f", UploadId=uid)
        assert [p["Size"] for p in listed["Parts"]] == [len(d) for d in parts_data]
        with pytest.raises(ClientError) as caught:
            await s3.complete_multipart_upload(
                Bucket="big",
                Key="f",
                UploadId=uid,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": 2, "ETag": etags[1]},
                        {"PartNumber": 1, "ETag": etags[0]},
                    ]
                },
            )
        assert code(caught.value) == "InvalidPartOrder"
        with pytest.raises(ClientError):
            await s3.head_object(Bucket="big", Key="f")
        done = await s3.complete_multipart_upload(
            Bucket="big",
            Key="f",
            UploadId=uid,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
            },
        )
        md5s = b"".join(hashlib.md5(d).digest() for d in parts_data)
        assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
        whole = b"".join(parts_data)
        body, got = await s3.get_bytes(Bucket="big", Key="f")
        assert body == whole
        assert got["ContentType"] == "a/b"
        edge = 5 * MiB
        body, _ = await s3.get_bytes(Bucket="big", Key="f", Range=f"bytes={edge - 5}-{edge + 4}")
        assert body == whole[edge - 5 : edge + 5]
        with pytest.raises(ClientError) as caught:
            await s3.list_parts(Bucket="big", Key="f", UploadId=uid)
        assert code(caught.value) == "NoSuchUpload"
        aborted = await s3.create_multipart_upload(Bucket="big", Key="g")
        await s3.upload_part(
            Bucket="big", Key="g", UploadId=aborted["UploadId"], PartNumber=1, Body=b"zz"
        )
        await s3.abort_multipart_upload(Bucket="big", Key="g", UploadId=aborted["UploadId"])
        with pytest.raises(ClientError) as caught:
            await s3.head_object(Bucket="big", Key="g")
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
