"""A disk store on a disk that refuses writes: full (ENOSPC, EDQUOT), read-only (EROFS), or
forbidden (EACCES, EPERM).  It keeps serving reads, refuses puts with StoreNotWritable naming the
path and the OS error, says why in usage(), finds a refusal at open before any put fails, and
still opens (read-only) on a data directory where SQLite cannot even open its index for writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import pytest
from disk_faults import refusing_writes
from test_store_conformance import disk_refuses_writes, make_fragment

from p2pstore.errors import FragmentNotFound, StoreError, StoreNotWritable
from p2pstore.store import MAX_PAGE, DiskFragmentStore
from p2pstore.store.directory import DataDirectory

MiB = 1 << 20
def read_only_data_directory(data_dir: Path) -> contextlib.AbstractContextManager[str]:
    """Everything of ``data_dir`` refuses writes, the directory itself and the index included,
    as on a disk remounted read-only: SQLite cannot create its -wal/-shm files there."""
    directories = [data_dir, data_dir / "tmp", data_dir / "fragments"]
    directories += sorted((data_dir / "fragments").iterdir())
    return refusing_writes([data_dir / "index.sqlite3", data_dir / "lock", *directories])


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO]
)
def test_every_refusal_of_the_disk_is_a_typed_error_naming_path_and_cause(
    tmp_path, monkeypatch, code
):
    """The OS error is injected where the store writes a fragment file."""
    kept_id, kept = make_fragment(1, 1000)
    new_id, new = make_fragment(2, 1000)
    with DiskFragmentStore(tmp_path, MiB) as store:
        store.put(kept_id, kept)
        refused_path = tmp_path / "tmp" / "0123.part"

        def refuse(self, fragment_id, data):
            raise OSError(code, os.strerror(code), str(refused_path))

        with monkeypatch.context() as patch:
            patch.setattr(DataDirectory, "write_atomic", refuse)
            with pytest.raises(StoreNotWritable) as refused:
                store.put(new_id, new)
            for part in (os.strerror(code), str(refused_path), new_id.hex()[:16]):
                assert part in str(refused.value)
            usage = store.usage()
            assert not usage.writable
            assert usage.write_refusal == usage.reason
            assert os.strerror(code) in usage.reason and str(refused_path) in usage.reason
            assert (usage.fragments, usage.bytes_used) == (1, 1000)  # the booking was released
            assert store.get(kept_id) == kept and store.has(kept_id)
            assert not store.has(new_id)
            assert store.scrub(MiB, None).corrupt_ids == ()
        store.put(new_id, new)  # the disk takes writes again: so does the store
        assert store.usage().writable and store.get(new_id) == new


def test_a_disk_that_already_refuses_writes_is_found_at_open(tmp_path):
    """No leftover to clean, nothing to repair: the probe write at open still finds it, so the
    node's health says so before the first put fails."""
    fid, data = make_fragment(1, 1000)
    with DiskFragmentStore(tmp_path, MiB) as store:
        store.put(fid, data)
    with disk_refuses_writes(tmp_path) as strerror, DiskFragmentStore(tmp_path, MiB) as store:
        usage = store.usage()
        assert not usage.writable
        assert strerror in usage.reason and str(tmp_path / "tmp") in usage.reason
        assert store.recovered.refusal == usage.reason
        assert store.get(fid) == data
    assert list((tmp_path / "tmp").iterdir()) == []  # the probe left nothing behind
    with DiskFragmentStore(tmp_path, MiB) as store:
        assert store.usage().writable and store.recovered.clean


def test_a_read_only_data_directory_opens_and_serves_what_it_holds(tmp_path):
    fragments = [make_fragment(seed, 2000 + seed) for seed in range(5)]
    new_id, new = make_fragment(99, 500)
    with DiskFragmentStore(tmp_path, MiB) as store:
        for fid, data in fragments:
            store.put(fid, data)
    with read_only_data_directory(tmp_path) as strerror, DiskFragmentStore(tmp_path, MiB) as store:
        usage = store.usage()
        assert (usage.fragments, usage.writable) == (5, False)
        assert usage.reason.startswith("opened read-only: cannot write")
        assert strerror in usage.reason
        for fid, data in fragments:
            assert store.has(fid) and store.get(fid) == data
        assert store.ids(None, MAX_PAGE) == sorted(fid for fid, _ in fragments)
        report = store.scrub(MiB, None)
        assert (report.checked, report.corrupt_ids, report.done) == (5, (), True)
        with pytest.raises(StoreNotWritable, match=strerror):
            store.put(new_id, new)
        with pytest.raises(StoreNotWritable):
            store.delete(fragments[0][0])
        with pytest.raises(FragmentNotFound):
            store.get(new_id)
        assert store.usage().fragments == 5
    # The disk takes writes again: the next open is an ordinary one.
    with DiskFragmentStore(tmp_path, MiB) as store:
        assert store.usage().writable
        store.put(new_id, new)
        assert store.usage().fragments == 6


def test_a_store_opened_read_only_says_a_restart_is_needed_once_the_disk_heals(tmp_path):
    """Its index connection is read-only for good: a write that reaches it is refused with
    advice, and the fragment file it wrote is removed again."""
    kept_id, kept = make_fragment(1, 1000)
    new_id, new = make_fragment(2, 1000)
    with DiskFragmentStore(tmp_path, MiB) as store:
        store.put(kept_id, kept)
    with read_only_data_directory(tmp_path):
        store = DiskFragmentStore(tmp_path, MiB)
    try:
        with pytest.raises(StoreNotWritable, match="restart the node"):
            store.put(new_id, new)
        assert not store.has(new_id)
        assert not (tmp_path / "fragments" / new_id.hex()[:2] / new_id.hex()).exists()
        assert store.get(kept_id) == kept
    finally:
        store.close()


def test_a_damaged_index_on_a_writable_disk_is_still_refused(tmp_path):
    """The read-only fallback is for disks that refuse writes, never a way around a bad index."""
    DiskFragmentStore(tmp_path, MiB).close()
    (tmp_path / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="move it aside"):
        DiskFragmentStore(tmp_path, MiB)
