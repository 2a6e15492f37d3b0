"""SigV4 as S3 checks it: AWS's published examples, and botocore (an independent signer) as the
oracle for any key, path, query and header; any change to what was signed is refused."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace

import pytest
from gateway_signing import botocore_signed, chunked_body
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.gateway.chunked import ChunkedDecoder
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.sigv4 import (
    STREAMING_PAYLOAD,
    Authorized,
    SignedRequest,
    authenticate,
    parse_timestamp,
)

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EMPTY = hashlib.sha256(b"").hexdigest()
T0 = parse_timestamp("20130524T000000Z")


def secrets(table: dict[str, str]):  # type: ignore[no-untyped-def]
    return table.get


def aws_get_example() -> SignedRequest:
    """AWS's "GET Object" example (sig-v4-header-based-auth)."""
    signature = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    return SignedRequest(
        method="GET",
        path="/test.txt",
        query=(),
        headers=(
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                f"AWS4-HMAC-SHA256 Credential={AWS_KEY}/20130524/us-east-1/s3/aws4_request,"
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                f"Signature={signature}",
            ),
        ),
    )


def test_aws_published_get_example_verifies() -> None:
    auth = authenticate(
        aws_get_example(), now=T0 + 60, region="us-east-1", secret_of=secrets({AWS_KEY: AWS_SECRET})
    )
    assert auth.access_key == AWS_KEY
    assert auth.payload == EMPTY


def with_header(request: SignedRequest, name: str, value: str | None) -> SignedRequest:
    kept = tuple(h for h in request.headers if h[0] != name)
    return replace(request, headers=kept + (((name, value),) if value is not None else ()))


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda r: replace(r, method="PUT"), "SignatureDoesNotMatch"),
        (lambda r: replace(r, path="/test.txu"), "SignatureDoesNotMatch"),
        (lambda r: replace(r, query=(("x", "1"),)), "SignatureDoesNotMatch"),
        (
            lambda r: replace(
                r, headers=tuple((k, "bytes=0-99" if k == "range" else v) for k, v in r.headers)
            ),
            "SignatureDoesNotMatch",
        ),
        (
            lambda r: replace(r, headers=tuple(h for h in r.headers if h[0] != "range")),
            "AccessDenied",
        ),
        (
            lambda r: replace(r, headers=tuple(h for h in r.headers if h[0] != "authorization")),
            "AccessDenied",
        ),
    ],
)
def test_changing_what_was_signed_is_refused(change, code) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(S3Error) as caught:
        authenticate(
            change(aws_get_example()),
            now=T0,
            region="us-east-1",
            secret_of=secrets({AWS_KEY: AWS_SECRET}),
        )
    assert caught.value.code == code


def test_wrong_secret_unknown_key_region_and_skew() -> None:
    request = aws_get_example()
    cases = [
        ({AWS_KEY: AWS_SECRET + "x"}, T0, "us-east-1", "SignatureDoesNotMatch"),
        ({}, T0, "us-east-1", "InvalidAccessKeyId"),
        ({AWS_KEY: AWS_SECRET}, T0, "eu-west-3", "AuthorizationHeaderMalformed"),
        ({AWS_KEY: AWS_SECRET}, T0 + 16 * 60, "us-east-1", "RequestTimeTooSkewed"),
        ({AWS_KEY: AWS_SECRET}, T0 - 16 * 60, "us-east-1", "RequestTimeTooSkewed"),
    ]
    for table, now, region, code in cases:
        with pytest.raises(S3Error) as caught:
            authenticate(request, now=now, region=region, secret_of=secrets(table))
        assert caught.value.code == code, (table, now, region)


def test_signature_v2_is_refused_with_the_reason() -> None:
    request = SignedRequest(
        "GET", "/", (), (("host", "h"), ("authorization", "AWS AKID:c2lnbmF0dXJl"))
    )
    with pytest.raises(S3Error) as caught:
        authenticate(request, now=T0, region="us-east-1", secret_of=secrets({}))
    assert caught.value.code == "InvalidRequest"


text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    min_size=1,
    max_size=20,
)
key_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    secret=key_text,
    key=st.lists(text, min_size=1, max_size=3).map("/".join),
    query=st.dictionaries(st.text("abcdefXYZ-_.~ %+", min_size=1, max_size=8), text, max_size=3),
    meta=st.dictionaries(
        st.sampled_from(["a", "b-c", "d"]), text.map(str.strip).filter(bool), max_size=2
    ),
    body=st.binary(max_size=64),
    region=st.sampled_from(["us-east-1", "fr-ges-1"]),
)
def test_any_botocore_signed_request_verifies_and_any_change_fails(
    secret: str, key: str, query: dict[str, str], meta: dict[str, str], body: bytes, region: str
) -> None:
    from urllib.parse import quote, urlencode

    url = "http://gw.example:9000/bucket/" + quote(key, safe="/~")
    if query:
        url += "?" + urlencode(query, quote_via=quote)
    headers = {
        f"x-amz-meta-{name}": value.encode("utf-8").decode("latin-1")
        for name, value in meta.items()
        if value.isascii()
    }
    request = botocore_signed(
        "PUT", url, access_key="GK1", secret=secret, region=region, headers=headers, body=body
    )
    now = parse_timestamp(request.header("x-amz-date") or "")
    auth = authenticate(request, now=now, region=region, secret_of=secrets({"GK1": secret}))
    assert auth.payload == hashlib.sha256(body).hexdigest()
    tampered = replace(request, path=request.path + "x")
    with pytest.raises(S3Error) as caught:
        authenticate(tampered, now=now, region=region, secret_of=secrets({"GK1": secret}))
    assert caught.value.code == "SignatureDoesNotMatch"


@settings(max_examples=60, deadline=None)
@given(
    secret=key_text,
    key=st.lists(text, min_size=1, max_size=3).map("/".join),
    expires=st.integers(1, 7 * 24 * 3600),
)
def test_presigned_urls_verify_until_they_expire(secret: str, key: str, expires: int) -> None:
    from urllib.parse import quote

    url = "http://gw.example:9000/bucket/" + quote(key, safe="/~") + "?versionId=7"
    request = botocore_signed(
        "GET", url, access_key="GK1", secret=secret, region="us-east-1", presign_expires=expires
    )
    signed_at = parse_timestamp(request.param("X-Amz-Date") or "")
    lookup = secrets({"GK1": secret})
    auth = authenticate(request, now=signed_at + expires, region="us-east-1", secret_of=lookup)
    assert auth.payload == "UNSIGNED-PAYLOAD"
    with pytest.raises(S3Error) as caught:
        authenticate(request, now=signed_at + expires + 1, region="us-east-1", secret_of=lookup)
    assert caught.value.code == "AccessDenied"
    other = replace(
        request, query=tuple((k, "8" if k == "versionId" else v) for k, v in request.query)
    )
    with pytest.raises(S3Error) as caught:
        authenticate(other, now=signed_at, region="us-east-1", secret_of=lookup)
    assert caught.value.code == "SignatureDoesNotMatch"


# -- STREAMING-AWS4-HMAC-SHA256-PAYLOAD ------------------------------------------------------


def aws_streaming_example() -> Authorized:
    """AWS's chunked "PUT Object" example (sigv4-streaming): 65536 + 1024 bytes of 'a'."""
    request = SignedRequest(
        method="PUT",
        path="/examplebucket/chunkObject.txt",
        query=(),
        headers=(
            ("host", "s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", STREAMING_PAYLOAD),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("content-length", "66824"),
            (
                "authorization",
                f"AWS4-HMAC-SHA256 Credential={AWS_KEY}/20130524/us-east-1/s3/aws4_request,"
                "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;"
                "x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
                "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
            ),
        ),
    )
    return authenticate(
        request, now=T0, region="us-east-1", secret_of=secrets({AWS_KEY: AWS_SECRET})
    )


def test_aws_published_streaming_example_decodes() -> None:
    auth = aws_streaming_example()
    body = chunked_body(auth, b"a" * 66560, 65536)
    assert len(body) == 66824
    assert (
        b"chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648" in body
    )
    assert (
        b"chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497" in body
    )
    assert (
        b"0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
        in body
    )
    decoder = ChunkedDecoder(auth)
    assert b"".join(decoder.feed(body)) == b"a" * 66560
    decoder.finish()


@settings(max_examples=100, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    chunk=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 4000), max_size=8),
    flip=st.one_of(st.none(), st.integers(0, 10_000)),
    truncate=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_chunked_bodies_release_only_signed_bytes(
    payload: bytes, chunk: int, cuts: list[int], flip: int | None, truncate: int | None
) -> None:
    auth = aws_streaming_example()
    body = bytearray(chunked_body(auth, payload, chunk))
    if flip is not None:
        body[flip % len(body)] ^= 0x01
    if truncate is not None:
        del body[truncate % len(body) :]
    intact = bytes(body) == chunked_body(auth, payload, chunk)
    decoder = ChunkedDecoder(auth)
    out: list[bytes] = []
    edges = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    try:
        for start, end in itertools.pairwise(edges):
            out.extend(decoder.feed(bytes(body[start:end])))
        decoder.finish()
    except S3Error:
        assert not intact
        released = b"".join(out)
        assert payload.startswith(released)
        assert len(released) % chunk == 0 or released == payload  # whole verified chunks
    else:
        assert intact
        assert b"".join(out) == payload


def test_a_chunk_larger_than_the_cap_is_refused_before_it_is_buffered() -> None:
    decoder = ChunkedDecoder(aws_streaming_example(), max_chunk=1024)
    with pytest.raises(S3Error) as caught:
        decoder.feed(b"801;chunk-signature=" + b"0" * 64 + b"\r\n")
    assert caught.value.code == "InvalidRequest"
    decoder = ChunkedDecoder(aws_streaming_example())
    with pytest.raises(S3Error):
        decoder.feed(b"1" * 5000)


def test_unsigned_chunks_with_checksum_trailer() -> None:
    decoder = ChunkedDecoder(None)
    body = b"5\r\nhello\r\n3\r\n!!!\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n"
    assert b"".join(decoder.feed(body)) == b"hello!!!"
    decoder.finish()
    assert decoder.trailers == {"x-amz-checksum-crc32": "NhCmhg=="}
