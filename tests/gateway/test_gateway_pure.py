"""The gateway's pure parts: routing, ETags, S3's XML and access keys."""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.gateway import etag
from p2pstore.gateway.keys import ENTROPY_BYTES, AccessKeyStore, new_key
from p2pstore.gateway.routing import Route, check_bucket_name, route
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.s3xml import (
    error_document,
    parse_complete_multipart,
    parse_delete,
    parse_versioning,
    render,
)

buckets = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)
keys = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(bucket=buckets, key=st.one_of(st.none(), keys), method=st.sampled_from(["GET", "PUT"]))
def test_path_style_and_virtual_host_style_route_alike(
    bucket: str, key: str | None, method: str
) -> None:
    path_style = route(method, "gw.example:9000", f"/{bucket}/{key or ''}", ())
    host_style = route(
        method, f"{bucket}.s3.example.org:9000", f"/{key or ''}", (), domains=["s3.example.org"]
    )
    assert path_style == host_style
    assert path_style.bucket == bucket
    assert path_style.key == key


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/", [], Route("ListBuckets", None, None)),
        ("GET", "/b", [("list-type", "2"), ("prefix", "a/")], Route("ListObjectsV2", "b", None)),
        ("GET", "/b", [("prefix", "a/")], Route("ListObjects", "b", None)),
        ("PUT", "/b", [], Route("CreateBucket", "b", None)),
        ("PUT", "/b", [("versioning", "")], Route("PutBucketVersioning", "b", None)),
        ("POST", "/b", [("delete", "")], Route("DeleteObjects", "b", None)),
        ("PUT", "/b/k/x", [], Route("PutObject", "b", "k/x")),
        ("PUT", "/b/k", [("partNumber", "2"), ("uploadId", "u")], Route("UploadPart", "b", "k")),
        ("POST", "/b/k", [("uploads", "")], Route("CreateMultipartUpload", "b", "k")),
        ("POST", "/b/k", [("uploadId", "u")], Route("CompleteMultipartUpload", "b", "k")),
        ("DELETE", "/b/k", [("uploadId", "u")], Route("AbortMultipartUpload", "b", "k")),
        ("GET", "/b/k", [("uploadId", "u")], Route("ListParts", "b", "k")),
        ("GET", "/b/k", [("versionId", "v"), ("x-id", "GetObject")], Route("GetObject", "b", "k")),
        ("HEAD", "/b/k", [], Route("HeadObject", "b", "k")),
    ],
)
def test_operations(method: str, path: str, query: list[tuple[str, str]], expected: Route) -> None:
    assert route(method, "gw", path, query) == expected


def test_copy_source_makes_a_copy() -> None:
    assert route("PUT", "gw", "/b/k", [], has_copy_source=True).operation == "CopyObject"


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/b/k", [("tagging", "")]),
        ("PUT", "/b", [("policy", "")]),
        ("GET", "/b", [("acl", ""), ("versions", "")]),
        ("PATCH", "/b/k", []),
        ("DELETE", "/", []),
    ],
)
def test_anything_else_is_not_implemented(
    method: str, path: str, query: list[tuple[str, str]]
) -> None:
    with pytest.raises(S3Error) as caught:
        route(method, "gw", path, query)
    assert caught.value.code == "NotImplemented"
    assert caught.value.status == 501


def test_bucket_names() -> None:
    for good in ("abc", "my-bucket.2026", "a" * 63):
        check_bucket_name(good)
    for bad in ("ab", "A-bucket", "-abc", "abc-", "a..b", "192.168.1.1", "a" * 64, "a_b"):
        with pytest.raises(S3Error):
            check_bucket_name(bad)


@given(st.lists(st.binary(max_size=100), min_size=1, max_size=20))
def test_multipart_etag_is_md5_of_md5s_dash_n(parts: list[bytes]) -> None:
    md5s = [hashlib.md5(p).digest() for p in parts]
    tag = etag.multipart(md5s)
    digest = hashlib.md5(b"".join(md5s)).hexdigest()
    assert tag == f'"{digest}-{len(parts)}"'
    assert [etag.part_md5(etag.single_part(m)) for m in md5s] == md5s


def test_content_md5() -> None:
    digest = hashlib.md5(b"hello").digest()
    assert etag.expected_md5(base64.b64encode(digest).decode()) == digest
    etag.check_md5(digest, digest)
    with pytest.raises(S3Error) as caught:
        etag.check_md5(digest, hashlib.md5(b"hellp").digest())
    assert caught.value.code == "BadDigest"
    with pytest.raises(S3Error) as caught:
        etag.expected_md5("not base64!")
    assert caught.value.code == "InvalidDigest"
    assert etag.matches('"abc", "def"', '"def"')
    assert etag.matches("*", '"x"')
    assert not etag.matches('"abc"', '"def"')


def test_xml_round_trips_and_refuses_entities() -> None:
    body = (
        b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b'<Part><PartNumber>1</PartNumber><ETag>"aa"</ETag></Part>'
        b"<Part><PartNumber>2</PartNumber><ETag>bb</ETag></Part></CompleteMultipartUpload>"
    )
    parts = parse_complete_multipart(body)
    assert [(p.number, p.etag) for p in parts] == [(1, '"aa"'), (2, "bb")]
    objects, quiet = parse_delete(
        b"<Delete><Quiet>true</Quiet><Object><Key>a</Key></Object>"
        b"<Object><Key>b</Key><VersionId>v1</VersionId></Object></Delete>"
    )
    assert [(o.key, o.version_id) for o in objects] == [("a", None), ("b", "v1")]
    assert quiet
    assert (
        parse_versioning(
            b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"
        )
        == "Enabled"
    )
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;">]><Delete><Object><Key>&b;</Key></Object></Delete>'
    )
    for bad in (laughs, b"<Delete><Object>", b"<Other/>", b"<Delete></Delete>", b"\xff" * 10):
        with pytest.raises(S3Error) as caught:
            parse_delete(bad)
        assert caught.value.code == "MalformedXML"


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xD7FF), max_size=40))
def test_rendered_text_is_escaped(text: str) -> None:
    document = render("ListBucketResult", [("Contents", [("Key", text)])])
    element = ET.fromstring(document)
    assert element[0][0].text == (text or None)
    error = ET.fromstring(error_document(S3Error("NoSuchKey", text, resource=text), "r1"))
    assert error.findtext("Code") == "NoSuchKey"


def test_access_keys(tmp_path: Path) -> None:
    store = AccessKeyStore(tmp_path / "keys.sqlite")
    assert (tmp_path / "keys.sqlite").stat().st_mode & 0o777 == 0o600
    full = new_key(b"\x01" * ENTROPY_BYTES, tenant="uni", buckets=None, read_only=False, now=1.0)
    narrow = new_key(
        b"\x02" * ENTROPY_BYTES, tenant="uni", buckets=["photos"], read_only=True, now=2.0
    )
    store.add(full)
    store.add(narrow)
    assert [k.key_id for k in store.all()] == [full.key_id, narrow.key_id]
    assert store.get(narrow.key_id) == narrow
    assert len(full.key_id) == 20 and len(full.secret) == 40
    assert full.permits("PutObject", "any") and full.permits("CreateBucket", "new")
    assert narrow.permits("GetObject", "photos")
    assert not narrow.permits("GetObject", "other")
    assert not narrow.permits("PutObject", "photos")
    assert not narrow.permits("CreateBucket", "photos")
    assert store.remove(narrow.key_id)
    assert not store.remove(narrow.key_id)
    assert store.secret_of(narrow.key_id) is None
    assert store.secret_of(full.key_id) == full.secret


keys_for_listing = st.lists(
    st.lists(st.sampled_from("ab/c\U0010ffff"), min_size=1, max_size=6).map("".join),
    unique=True,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(
    names=keys_for_listing,
    prefix=st.lists(st.sampled_from("ab/"), max_size=2).map("".join),
    delimiter=st.sampled_from(["", "/", "b"]),
    max_keys=st.integers(1, 6),
)
def test_listing_pages_match_a_brute_force_model(
    names: list[str], prefix: str, delimiter: str, max_keys: int
) -> None:
    """Paging through every page gives exactly S3's answer: names with the prefix, rolled up
    at the first delimiter after it, each entry once, in order."""
    import trio

    from p2pstore.gateway.backend import ObjectInfo, ObjectMeta
    from p2pstore.gateway.listing import list_page

    ordered = sorted(names)

    async def fetch(after: str, limit: int) -> list[ObjectInfo]:
        hits = [n for n in ordered if n > after and n.startswith(prefix)][:limit]
        return [ObjectInfo(n, "null", 0, ObjectMeta(""), 0.0, ()) for n in hits]

    expected: list[str] = []
    for name in ordered:
        if not name.startswith(prefix):
            continue
        cut = name.find(delimiter, len(prefix)) if delimiter else -1
        entry = name[: cut + len(delimiter)] if cut >= 0 else name
        if entry not in expected:
            expected.append(entry)

    async def all_pages() -> list[str]:
        seen: list[str] = []
        after, skip = "", None
        for _ in range(100):
            page = await list_page(
                fetch,
                prefix=prefix,
                delimiter=delimiter,
                after=after,
                max_keys=max_keys,
                skip=skip,
            )
            assert len(page.objects) + len(page.prefixes) <= max_keys
            seen += sorted([o.key for o in page.objects] + page.prefixes)
            if not page.truncated:
                return seen
            after, skip = page.cursor, page.skip
        raise AssertionError("listing did not end")

    assert trio.run(all_pages) == expected
