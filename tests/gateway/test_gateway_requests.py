"""What clients send beyond boto3's happy path: streaming-signed uploads, versioning,
conditional requests, and bad input (malformed XML, wrong digests, expired or forged signatures,
oversized headers, a client vanishing mid-upload): an S3 error or a clean close, nothing partial
visible, and the gateway keeps serving."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from botocore.exceptions import ClientError
from gateway_harness import Gateway, running_gateway
from gateway_signing import chunked_body, sign_headers

from p2pstore.gateway.blobs import MemoryBlobs
from p2pstore.gateway.sigv4 import STREAMING_PAYLOAD, UNSIGNED_PAYLOAD


def code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


def status(error: ClientError) -> int:
    return int(error.response["ResponseMetadata"]["HTTPStatusCode"])


async def raw(
    gw: Gateway, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    parts = urlsplit(gw.url)

    def send() -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        result = response.status, response.read()
        connection.close()
        return result

    return await trio.to_thread.run_sync(send)


def signed(gw: Gateway, method: str, path: str, payload: str, **headers: str):  # type: ignore[no-untyped-def]
    return sign_headers(
        method,
        gw.url + path,
        access_key=gw.admin.key_id,
        secret=gw.admin.secret,
        payload=payload,
        headers=headers,
        now=time.time(),
    )


async def test_streaming_signed_upload(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        await gw.s3.create_bucket(Bucket="bkt")
        data = os.urandom(200_000)
        headers, auth = signed(
            gw,
            "PUT",
            "/bkt/streamed",
            STREAMING_PAYLOAD,
            **{"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))},
        )
        body = chunked_body(auth, data, 65536)
        headers["content-length"] = str(len(body))
        answer, _ = await raw(gw, "PUT", "/bkt/streamed", headers, body)
        assert answer == 200
        got, _ = await gw.s3.get_bytes(Bucket="bkt", Key="streamed")
        assert got == data

        # A tampered chunk: refused, and nothing is visible under the name.
        headers, auth = signed(
            gw,
            "PUT",
            "/bkt/tampered",
            STREAMING_PAYLOAD,
            **{"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data))},
        )
        body = bytearray(chunked_body(auth, data, 65536))
        body[-300] ^= 1
        headers["content-length"] = str(len(body))
        answer, text = await raw(gw, "PUT", "/bkt/tampered", headers, bytes(body))
        assert answer == 403 and b"SignatureDoesNotMatch" in text
        with pytest.raises(ClientError) as caught:
            await gw.s3.head_object(Bucket="bkt", Key="tampered")
        assert status(caught.value) == 404


async def test_versioning(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        s3 = gw.s3
        await s3.create_bucket(Bucket="ver")
        await s3.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Enabled"})
        assert (await s3.get_bucket_versioning(Bucket="ver"))["Status"] == "Enabled"
        first = await s3.put_object(Bucket="ver", Key="doc", Body=b"one")
        second = await s3.put_object(Bucket="ver", Key="doc", Body=b"two")
        assert first["VersionId"] != second["VersionId"]
        body, got = await s3.get_bytes(Bucket="ver", Key="doc")
        assert body == b"two" and got["VersionId"] == second["VersionId"]
        body, _ = await s3.get_bytes(Bucket="ver", Key="doc", VersionId=first["VersionId"])
        assert body == b"one"
        marker = await s3.delete_object(Bucket="ver", Key="doc")
        assert marker["DeleteMarker"]
        with pytest.raises(ClientError) as caught:
            await s3.get_object(Bucket="ver", Key="doc")
        assert code(caught.value) == "NoSuchKey"
        versions = await s3.list_object_versions(Bucket="ver")
        assert [v["VersionId"] for v in versions["Versions"]] == [
            second["VersionId"],
            first["VersionId"],
        ]
        assert [m["IsLatest"] for m in versions["DeleteMarkers"]] == [True]
        assert (await s3.list_objects_v2(Bucket="ver"))["KeyCount"] == 0
        await s3.delete_object(Bucket="ver", Key="doc", VersionId=marker["VersionId"])
        body, _ = await s3.get_bytes(Bucket="ver", Key="doc")
        assert body == b"two"


async def test_conditional_requests_and_digests(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        s3 = gw.s3
        await s3.create_bucket(Bucket="cnd")
        put = await s3.put_object(Bucket="cnd", Key="k", Body=b"hello")
        with pytest.raises(ClientError) as caught:
            await s3.get_object(Bucket="cnd", Key="k", IfNoneMatch=put["ETag"])
        assert status(caught.value) == 304
        with pytest.raises(ClientError) as caught:
            await s3.get_object(Bucket="cnd", Key="k", IfMatch='"0000"')
        assert status(caught.value) == 412
        body, _ = await s3.get_bytes(Bucket="cnd", Key="k", IfMatch=put["ETag"])
        assert body == b"hello"
        with pytest.raises(ClientError) as caught:
            await s3.get_object(Bucket="cnd", Key="k", Range="bytes=10-20")
        assert code(caught.value) == "InvalidRange"
        wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        with pytest.raises(ClientError) as caught:
            await s3.put_object(Bucket="cnd", Key="bad", Body=b"hello", ContentMD5=wrong)
        assert code(caught.value) == "BadDigest"
        with pytest.raises(ClientError) as caught:
            await s3.head_object(Bucket="cnd", Key="bad")
        assert status(caught.value) == 404
        with pytest.raises(ClientError) as caught:
            await s3.put_object(Bucket="cnd", Key="k", Body=b"again", IfNoneMatch="*")
        assert status(caught.value) == 412


async def test_bad_input_gets_an_s3_error_and_the_gateway_keeps_serving(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        s3 = gw.s3
        await s3.create_bucket(Bucket="bkt")

        body = b"<Delete><Object><Key>a</Key>"
        headers, _ = signed(gw, "POST", "/bkt?delete", hashlib.sha256(body).hexdigest())
        answer, text = await raw(gw, "POST", "/bkt?delete", headers, body)
        assert answer == 400 and b"<Code>MalformedXML</Code>" in text

        headers, _ = signed(gw, "PUT", "/bkt/k", hashlib.sha256(b"signed").hexdigest())
        answer, text = await raw(gw, "PUT", "/bkt/k", headers, b"sent")
        assert answer == 400 and b"XAmzContentSHA256Mismatch" in text

        headers, _ = signed(gw, "GET", "/", UNSIGNED_PAYLOAD, **{"x-amz-meta-big": "x" * 20_000})
        answer, text = await raw(gw, "GET", "/", headers, b"")
        assert answer == 400 and b"RequestHeaderSectionTooLarge" in text

        answer, _ = await raw(gw, "GET", "/", {"x-junk": "y" * 100_000}, b"")
        assert answer in (400, 413, 431)

        answer, text = await raw(gw, "GET", "/bkt", {}, b"")
        assert answer == 403 and b"AccessDenied" in text

        url = s3.client.generate_presigned_url(
            "get_object", Params={"Bucket": "bkt", "Key": "k"}, ExpiresIn=5
        )
        gw.app.clock = lambda: time.time() + 60
        path = url[len(gw.url) :]
        answer, text = await raw(gw, "GET", path, {}, b"")
        assert answer == 403 and b"expired" in text
        gw.app.clock = time.time

        # A client that vanishes half-way through a body: nothing becomes visible.
        headers, _ = signed(gw, "PUT", "/bkt/half", UNSIGNED_PAYLOAD)
        parts = urlsplit(gw.url)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"PUT /bkt/half HTTP/1.1\r\n{head}content-length: 1000000\r\n\r\n".encode()

        def vanish() -> None:
            with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
                sock.sendall(request + os.urandom(300_000))

        await trio.to_thread.run_sync(vanish)
        with pytest.raises(ClientError) as caught:
            await s3.head_object(Bucket="bkt", Key="half")
        assert status(caught.value) == 404

        with pytest.raises(ClientError) as caught:
            await s3.put_object_acl(Bucket="bkt", Key="k", ACL="private")
        assert code(caught.value) == "NotImplemented"
        assert [b["Name"] for b in (await s3.list_buckets())["Buckets"]] == ["bkt"]
        assert gw.app.metrics.count("ListBuckets", 200) == 1
        assert gw.app.metrics.count("ListObjects", 403) == 1  # the anonymous request
        assert gw.app.metrics.count("GetObject", 403) == 1  # the expired presigned URL
        assert b'p2pstore_gateway_requests_total{operation="PutObject"' in (
            gw.app.metrics.exposition()
        )


async def test_keys_limited_to_buckets(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        await gw.s3.create_bucket(Bucket="mine")
        await gw.s3.create_bucket(Bucket="theirs")
        narrow = gw.client(gw.key(tenant="uni", buckets=["mine"], read_only=False))
        await narrow.put_object(Bucket="mine", Key="k", Body=b"x")
        with pytest.raises(ClientError) as caught:
            await narrow.put_object(Bucket="theirs", Key="k", Body=b"x")
        assert code(caught.value) == "AccessDenied"
        assert [b["Name"] for b in (await narrow.list_buckets())["Buckets"]] == ["mine"]
        other = gw.client(gw.key(tenant="elsewhere", buckets=None, read_only=False))
        with pytest.raises(ClientError) as caught:
            await other.get_object(Bucket="mine", Key="k")
        assert code(caught.value) == "AccessDenied"
        with pytest.raises(ClientError) as caught:
            await other.create_bucket(Bucket="mine")
        assert code(caught.value) == "BucketAlreadyExists"
        gw.keys.remove(narrow.client._request_signer._credentials.access_key)
        with pytest.raises(ClientError) as caught:
            await narrow.list_buckets()
        assert code(caught.value) == "InvalidAccessKeyId"
