"""Multipart uploads in progress, the gateway's own state: listed in order, bounded per tenant,
forgotten after their age, and never shown to another tenant."""

from __future__ import annotations

import itertools

import pytest

from p2pstore.gateway.backend import Blob, ObjectMeta
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.uploads import UploadStore


def store(now: list[float], **kwargs: object) -> UploadStore:
    counter = itertools.count()
    return UploadStore(
        ":memory:",
        clock=lambda: now[0],
        entropy=lambda n: next(counter).to_bytes(n, "big"),
        **kwargs,  # type: ignore[arg-type]
    )


def test_uploads_list_in_key_then_id_order_after_a_marker() -> None:
    now = [1000.0]
    uploads = store(now)
    made = [uploads.create("uni", "b", key, ObjectMeta("")) for key in ("b/2", "a", "b/1", "a")]
    listed = uploads.in_progress("uni", "b", "", ("", ""), 10)
    assert [(u.key, u.upload_id) for u in listed] == sorted((u.key, u.upload_id) for u in made)
    after_first = uploads.in_progress("uni", "b", "", (listed[0].key, listed[0].upload_id), 10)
    assert after_first == listed[1:]
    assert [u.key for u in uploads.in_progress("uni", "b", "b/", ("", ""), 10)] == ["b/1", "b/2"]
    assert uploads.in_progress("other", "b", "", ("", ""), 10) == []
    with pytest.raises(S3Error) as caught:
        uploads.get("other", "b", "a", made[1].upload_id)
    assert caught.value.code == "NoSuchUpload"


def test_uploads_are_bounded_per_tenant_and_expire() -> None:
    now = [1000.0]
    uploads = store(now, max_uploads=2, max_age=100.0)
    first = uploads.create("uni", "b", "k", ObjectMeta(""))
    uploads.put_part(first, 1, Blob("cap", 5), b"m" * 16)
    uploads.create("uni", "b", "k", ObjectMeta(""))
    uploads.create("else", "b", "k", ObjectMeta(""))  # another tenant's count
    with pytest.raises(S3Error) as caught:
        uploads.create("uni", "b", "k", ObjectMeta(""))
    assert caught.value.code == "SlowDown"
    now[0] += 101
    fresh = uploads.create("uni", "b", "k", ObjectMeta(""))  # the old ones are forgotten
    assert uploads.in_progress("uni", "b", "", ("", ""), 10) == [fresh]
    assert uploads.parts(first) == []
    assert not uploads.busy("else", "b")
