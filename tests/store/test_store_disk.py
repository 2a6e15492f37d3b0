"""What only the disk store has: layout, restarts, recovery, the lock, read-only disks."""

from __future__ import annotations

import random
import sqlite3

import pytest

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.errors import IntegrityError, QuotaExceeded, StoreError
from p2pstore.store import MAX_PAGE, DiskFragmentStore, FragmentNotFound, Reconciliation
from p2pstore.store import disk as disk_module
from p2pstore.store.directory import READ_BLOCK, DataDirectory

MiB = 1 << 20


def make_fragment(seed: int, size: int) -> tuple[bytes, bytes]:
    data = random.Random(seed).randbytes(size)
    return fragment_id(data), data


def file_of(data_dir, fid):
    return data_dir / "fragments" / fid.hex()[:2] / fid.hex()


def test_fragments_are_files_named_by_id_under_a_prefix_directory(tmp_path):
    fid, data = make_fragment(1, 1234)
    with DiskFragmentStore(tmp_path, MiB) as store:
        store.put(fid, data)
    assert file_of(tmp_path, fid).read_bytes() == data
    assert len(list((tmp_path / "fragments").iterdir())) == 256
    assert (tmp_path / "index.sqlite3").is_file()
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("size", [0, 1, 16 * 1024 + 1, READ_BLOCK, 2 * READ_BLOCK + 12345])
def test_the_streaming_hash_of_a_file_is_its_fragment_id(tmp_path, size):
    """Scrub and recovery hash files in READ_BLOCK pieces: the same id as the store's check."""
    data = random.Random(size).randbytes(size)
    path = tmp_path / "file"
    path.write_bytes(data)
    directory = DataDirectory(tmp_path / "dir")
    try:
        digest, read, _ = directory.digest(path, size + 1)
    finally:
        directory.close()
    assert (digest, read) == (fragment_id(data), size)


def test_reopening_keeps_everything(tmp_path):
    fragments = [make_fragment(seed, seed * 100) for seed in range(20)]
    with DiskFragmentStore(tmp_path, MiB) as store:
        for fid, data in fragments:
            store.put(fid, data)
        store.delete(fragments[0][0])
        before = store.usage()
    with DiskFragmentStore(tmp_path, MiB) as store:
        assert store.recovered.clean
        assert store.usage() == before
        assert store.ids(None, MAX_PAGE) == sorted(fid for fid, _ in fragments[1:])
        for fid, data in fragments[1:]:
            assert store.get(fid) == data
        assert not store.has(fragments[0][0])


def test_a_second_store_on_the_same_directory_is_refused(tmp_path):
    store = DiskFragmentStore(tmp_path, MiB)
    with pytest.raises(StoreError, match="in use by another store") as refused:
        DiskFragmentStore(tmp_path, MiB)
    assert str(tmp_path) in str(refused.value)
    store.close()
    DiskFragmentStore(tmp_path, MiB).close()  # the lock goes with the store


def test_open_repairs_what_a_crash_left(tmp_path):
    kept_id, kept = make_fragment(1, 500)
    lost_id, lost = make_fragment(2, 600)
    with DiskFragmentStore(tmp_path, MiB) as store:
        store.put(kept_id, kept)
        store.put(lost_id, lost)
    (tmp_path / "tmp" / "0123abcd.part").write_bytes(b"half a fragm")
    (tmp_path / "tmp" / "4567ef01.part").write_bytes(b"")
    orphan_id, orphan = make_fragment(3, 700)
    file_of(tmp_path, orphan_id).write_bytes(orphan)
    bad_id, _ = make_fragment(4, 800)
    file_of(tmp_path, bad_id).write_bytes(b"not what the name says")
    file_of(tmp_path, lost_id).unlink()
    stray = tmp_path / "fragments" / "00" / "README"
    stray.write_text("an operator's note")
    with DiskFragmentStore(tmp_path, MiB) as store:
        assert store.recovered == Reconciliation(
            tmp_removed=2, orphans_indexed=1, orphans_removed=1, rows_dropped=1, unknown_entries=1
        )
        assert "re-indexed 1" in str(store.recovered)
        assert store.ids(None, MAX_PAGE) == sorted([kept_id, orphan_id])
        assert store.get(orphan_id) == orphan
        assert store.usage().bytes_used == 1200
        assert list((tmp_path / "tmp").iterdir()) == []
        assert not file_of(tmp_path, bad_id).exists()
        assert stray.read_text() == "an operator's note"  # not ours: left alone


@pytest.mark.parametrize("change", [b"", b"extra"], ids=["truncated", "extended"])
def test_a_file_of_the_wrong_size_is_corrupt(tmp_path, change):
    fid, data = make_fragment(1, 1000)
    with DiskFragmentStore(tmp_path, MiB) as store:
        store.put(fid, data)
        file_of(tmp_path, fid).write_bytes(data[:500] if not change else data + change)
        with pytest.raises(IntegrityError):
            store.get(fid)
        assert not file_of(tmp_path, fid).exists()
        assert store.usage().fragments == 0


def test_a_file_removed_behind_the_store_is_reported_not_served(tmp_path):
    gone_get, data_get = make_fragment(1, 100)
    gone_scrub, data_scrub = make_fragment(2, 100)
    with DiskFragmentStore(tmp_path, MiB) as store:
        store.put(gone_get, data_get)
        store.put(gone_scrub, data_scrub)
        file_of(tmp_path, gone_get).unlink()
        file_of(tmp_path, gone_scrub).unlink()
        with pytest.raises(FragmentNotFound, match="is gone"):
            store.get(gone_get)
        report = store.scrub(MiB, None)
        assert report.corrupt_ids == (gone_scrub,)
        assert store.usage().fragments == 0
        assert store.usage().corrupt_found == 2


def test_scrub_pages_through_more_rows_than_one_query(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_module, "SCRUB_ROWS", 8)
    rows = disk_module.SCRUB_ROWS
    count = 3 * rows + 4
    with DiskFragmentStore(tmp_path, MiB) as store:
        for seed in range(count):
            store.put(*make_fragment(seed, 3))
        report = store.scrub(MiB, None)
        assert (report.checked, report.bytes_checked, report.done) == (count, 3 * count, True)
        half = store.scrub(3 * (rows + 5), None)
        assert half.checked == rows + 5
        assert half.next_cursor == store.ids(None, MAX_PAGE)[rows + 4]
        rest = store.scrub(MiB, half.next_cursor)
        assert (rest.checked, rest.done) == (count - rows - 5, True)


def test_a_damaged_index_is_refused_with_advice(tmp_path):
    fid, data = make_fragment(1, 100)
    with DiskFragmentStore(tmp_path, MiB) as store:
        store.put(fid, data)
    (tmp_path / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="move it aside"):
        DiskFragmentStore(tmp_path, MiB)
    (tmp_path / "index.sqlite3").rename(tmp_path / "index.broken")
    with DiskFragmentStore(tmp_path, MiB) as store:  # rebuilt from the files
        assert store.recovered.orphans_indexed == 1
        assert store.get(fid) == data


def test_an_index_from_a_newer_version_is_refused(tmp_path):
    DiskFragmentStore(tmp_path, MiB).close()
    with sqlite3.connect(tmp_path / "index.sqlite3") as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="upgrade p2pstore"):
        DiskFragmentStore(tmp_path, MiB)


def test_what_each_uploader_holds_survives_a_restart(tmp_path):
    alice, bob = b"\xa1" * 20, b"\xb0" * 20
    with DiskFragmentStore(tmp_path, MiB, identity_quota=1000) as store:
        store.put(*make_fragment(1, 600), alice)
        store.put(*make_fragment(2, 300), bob)
        store.put(*make_fragment(3, 200))
    with DiskFragmentStore(tmp_path, MiB, identity_quota=1000) as store:
        assert (store.uploaded_by(alice), store.uploaded_by(bob)) == (600, 300)
        with pytest.raises(QuotaExceeded, match="600 bytes here"):
            store.put(*make_fragment(4, 401), alice)  # restarting does not reset a share


def test_an_index_of_schema_1_is_migrated_in_place(tmp_path):
    """Fragments stored before uploaders were recorded count against no identity."""
    fid, data = make_fragment(1, 700)
    DiskFragmentStore(tmp_path, MiB).close()
    index = tmp_path / "index.sqlite3"
    index.unlink()
    with sqlite3.connect(index) as db:  # what p2pstore wrote before the uploader column
        db.execute(
            "CREATE TABLE fragments (id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 32), "
            "size INTEGER NOT NULL CHECK (size >= 0)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO fragments (id, size) VALUES (?, ?)", (fid, len(data)))
        db.execute("PRAGMA user_version=1")
    db.close()
    file_of(tmp_path, fid).write_bytes(data)
    someone = b"\x5e" * 20
    with DiskFragmentStore(tmp_path, MiB, identity_quota=500) as store:
        assert store.recovered.clean and store.get(fid) == data
        assert store.uploaded_by(someone) == 0
        store.put(*make_fragment(2, 500), someone)
    with sqlite3.connect(index) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        rows = dict(db.execute("SELECT id, uploader FROM fragments").fetchall())
    db.close()
    assert rows[fid] is None and someone in rows.values()


def test_orphans_count_even_past_the_quota(tmp_path):
    fid, data = make_fragment(1, 800)
    DiskFragmentStore(tmp_path, MiB).close()
    file_of(tmp_path, fid).write_bytes(data)
    with DiskFragmentStore(tmp_path, 500) as store:
        usage = store.usage()
        assert (usage.bytes_used, usage.free_bytes, usage.quota_fraction) == (800, 0, 1.6)
        assert store.get(fid) == data
