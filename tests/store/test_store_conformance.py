"""One contract, two stores: every test here runs against the memory and the disk store."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from disk_faults import refusing_writes

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.errors import IntegrityError, QuotaExceeded, StoreError, StoreNotWritable
from p2pstore.store import (
    MAX_PAGE,
    DiskFragmentStore,
    FragmentNotFound,
    FragmentStore,
    MemoryFragmentStore,
)

MiB = 1 << 20


def make_fragment(seed: int, size: int) -> tuple[bytes, bytes]:
    data = random.Random(seed).randbytes(size)
    return fragment_id(data), data


# --- refusing writes on a real disk ----------------------------------------------------------

def disk_refuses_writes(data_dir: Path) -> contextlib.AbstractContextManager[str]:
    """The kernel refuses creating or removing files in tmp/ and fragments/*/."""
    return refusing_writes([data_dir / "tmp", *sorted((data_dir / "fragments").iterdir())])


# --- the two implementations -----------------------------------------------------------------


class MemoryHarness:
    def __init__(self, tmp_path: Path) -> None:
        self.opened: list[FragmentStore] = []

    def open(self, quota: int, identity_quota: int | None = None) -> MemoryFragmentStore:
        store = MemoryFragmentStore(quota, identity_quota=identity_quota)
        self.opened.append(store)
        return store

    def corrupt(self, store, fid: bytes) -> None:
        store.corrupt(fid)

    @contextlib.contextmanager
    def writes_refused(self, store) -> Iterator[str]:
        store.fail_writes("Read-only file system (simulated)")
        try:
            yield "Read-only file system"
        finally:
            store.fail_writes(None)

    def stray_files(self, store) -> list[str]:
        return []


class DiskHarness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.opened: list[FragmentStore] = []

    def open(self, quota: int, identity_quota: int | None = None) -> DiskFragmentStore:
        store = DiskFragmentStore(
            self.tmp_path / f"node{len(self.opened)}", quota, identity_quota=identity_quota
        )
        self.opened.append(store)
        return store

    def corrupt(self, store, fid: bytes) -> None:
        path = store.data_dir / "fragments" / fid.hex()[:2] / fid.hex()
        with path.open("r+b") as file:
            first = file.read(1)
            file.seek(0)
            file.write(bytes([first[0] ^ 0x01]))

    def writes_refused(self, store):
        return disk_refuses_writes(store.data_dir)

    def stray_files(self, store) -> list[str]:
        """Files on disk that are not the file of an indexed fragment."""
        stored = {fid.hex() for fid in store.ids(None, MAX_PAGE)}
        found = [p for p in (store.data_dir / "fragments").rglob("*") if p.is_file()]
        found += list((store.data_dir / "tmp").iterdir())
        return sorted(str(p) for p in found if p.name not in stored)


@pytest.fixture(params=[MemoryHarness, DiskHarness], ids=["memory", "disk"])
def harness(request, tmp_path):
    harness = request.param(tmp_path)
    yield harness
    for store in harness.opened:
        store.close()


@pytest.fixture
def store(harness):
    return harness.open(MiB)


# --- the contract ----------------------------------------------------------------------------


def test_put_then_get_round_trips(store):
    fragments = [make_fragment(seed, size) for seed, size in enumerate([0, 1, 1000, 70_000])]
    for fid, data in fragments:
        assert not store.has(fid)
        store.put(fid, data)
    for fid, data in fragments:
        assert store.has(fid)
        assert store.size_of(fid) == len(data)
        assert store.get(fid) == data
    assert store.size_of(make_fragment(99, 10)[0]) is None
    usage = store.usage()
    assert usage.fragments == 4
    assert usage.bytes_used == 71_001
    assert usage.quota_bytes == MiB
    assert usage.free_bytes == MiB - 71_001
    assert (usage.writable, usage.reason, usage.corrupt_found) == (True, None, 0)


def test_put_is_idempotent(store, harness):
    fid, data = make_fragment(1, 500)
    store.put(fid, data)
    store.put(fid, data)
    assert store.get(fid) == data
    assert (store.usage().fragments, store.usage().bytes_used) == (1, 500)
    assert store.ids(None, 10) == [fid]
    assert harness.stray_files(store) == []


def test_put_with_the_wrong_id_stores_nothing(store, harness):
    fid, _ = make_fragment(1, 500)
    _, other = make_fragment(2, 500)
    with pytest.raises(IntegrityError, match=fid.hex()[:16]):
        store.put(fid, other)
    assert not store.has(fid)
    assert store.ids(None, 10) == []
    assert store.usage().bytes_used == 0
    assert harness.stray_files(store) == []


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33, "ab" * 16])
def test_malformed_ids_are_refused(store, bad):
    for call in (store.get, store.has, store.delete):
        with pytest.raises(ValueError, match="32 bytes"):
            call(bad)
    with pytest.raises(ValueError, match="32 bytes"):
        store.put(bad, b"data")


def test_quota_refuses_with_the_numbers_and_stores_nothing(harness):
    store = harness.open(1000)
    first_id, first = make_fragment(1, 600)
    store.put(first_id, first)
    big_id, big = make_fragment(2, 401)
    with pytest.raises(QuotaExceeded) as refused:
        store.put(big_id, big)
    message = str(refused.value)
    for number in ("600 bytes used", "1000-byte quota", "401 more bytes", big_id.hex()[:16]):
        assert number in message
    assert isinstance(refused.value, StoreError)
    assert not store.has(big_id)
    assert store.usage().bytes_used == 600
    assert harness.stray_files(store) == []
    exact_id, exact = make_fragment(3, 400)  # filling the quota exactly is allowed
    store.put(exact_id, exact)
    assert store.usage().bytes_used == store.usage().quota_bytes == 1000
    assert store.usage().writable  # a full quota is not a disk refusal


def test_a_full_quota_says_why_it_refuses_writes_until_space_is_freed(harness):
    store = harness.open(1000)
    kept_id, kept = make_fragment(1, 700)
    store.put(kept_id, kept)
    usage = store.usage()
    assert (usage.quota_full, usage.write_refusal) == (False, None)
    big_id, big = make_fragment(2, 400)
    with pytest.raises(QuotaExceeded):
        store.put(big_id, big)
    usage = store.usage()
    assert usage.writable and usage.reason is None  # the disk itself is fine
    assert usage.quota_full and usage.quota_refused == 400
    assert usage.write_refusal is not None
    assert usage.write_refusal.startswith("quota full: 700 of 1000 bytes used")
    assert "400" in usage.write_refusal
    assert store.get(kept_id) == kept  # reads go on
    small_id, small = make_fragment(3, 250)  # a smaller fragment still fits...
    store.put(small_id, small)
    assert store.usage().quota_full  # ...but one like the refused one still would not
    assert store.delete(kept_id)
    usage = store.usage()
    assert (usage.quota_full, usage.write_refusal) == (False, None)
    store.put(big_id, big)


def test_a_missing_fragment_is_a_distinct_error(store):
    fid, _ = make_fragment(1, 10)
    with pytest.raises(FragmentNotFound, match=fid.hex()[:16]):
        store.get(fid)
    assert issubclass(FragmentNotFound, StoreError)
    assert not issubclass(FragmentNotFound, IntegrityError)


def test_corrupt_bytes_are_never_served_and_are_removed(store, harness):
    fid, data = make_fragment(1, 4096)
    keep_id, keep = make_fragment(2, 100)
    store.put(fid, data)
    store.put(keep_id, keep)
    harness.corrupt(store, fid)
    with pytest.raises(IntegrityError, match="removed"):
        store.get(fid)
    assert not store.has(fid)
    with pytest.raises(FragmentNotFound):
        store.get(fid)
    usage = store.usage()
    assert (usage.fragments, usage.bytes_used, usage.corrupt_found) == (1, 100, 1)
    assert harness.stray_files(store) == []
    assert store.get(keep_id) == keep
    store.put(fid, data)  # repair puts it back
    assert store.get(fid) == data


def _scrub_pass(store, max_bytes):
    """Run one whole pass; return the reports."""
    reports = []
    cursor = None
    while True:
        report = store.scrub(max_bytes, cursor)
        reports.append(report)
        assert report.next_cursor is None or cursor is None or report.next_cursor > cursor
        cursor = report.next_cursor
        if report.done:
            return reports
        assert len(reports) < 1000


def test_scrub_walks_everything_once_within_budget_and_removes_corrupt(store, harness):
    rng = random.Random(7)
    fragments = [make_fragment(seed, rng.randrange(1, 3000)) for seed in range(40)]
    for fid, data in fragments:
        store.put(fid, data)
    corrupted = {fid for fid, _ in rng.sample(fragments, 5)}
    for fid in corrupted:
        harness.corrupt(store, fid)
    max_bytes = 5000
    reports = _scrub_pass(store, max_bytes)
    assert len(reports) > 1
    for report in reports:
        assert report.bytes_checked <= max_bytes or report.checked == 1
        assert 0.0 <= report.progress <= 1.0
    assert sum(r.checked for r in reports) == 40
    assert sum(r.bytes_checked for r in reports) == sum(len(d) for _, d in fragments)
    found = [fid for r in reports for fid in r.corrupt_ids]
    assert sorted(found) == sorted(corrupted)
    assert store.usage().corrupt_found == 5
    survivors = {fid: data for fid, data in fragments if fid not in corrupted}
    assert store.ids(None, MAX_PAGE) == sorted(survivors)
    for fid, data in survivors.items():
        assert store.get(fid) == data
    assert harness.stray_files(store) == []
    second = _scrub_pass(store, max_bytes)
    assert sum(r.checked for r in second) == 35
    assert not any(r.corrupt_ids for r in second)


def test_scrub_with_a_budget_below_one_fragment_still_advances(store):
    fragments = sorted(make_fragment(seed, 100) for seed in range(3))
    for fid, data in fragments:
        store.put(fid, data)
    reports = _scrub_pass(store, 1)
    assert [r.checked for r in reports] == [1, 1, 1]
    assert [r.next_cursor for r in reports] == [fragments[0][0], fragments[1][0], None]


def test_scrub_of_an_empty_store_is_done_at_once(store):
    report = store.scrub(1000, None)
    assert (report.checked, report.bytes_checked, report.done, report.progress) == (0, 0, True, 1.0)
    with pytest.raises(ValueError, match="max_bytes"):
        store.scrub(0, None)


def test_ids_pages_through_everything_in_order(store):
    fids = sorted(make_fragment(seed, 10)[0] for seed in range(25))
    for seed in range(25):
        store.put(*make_fragment(seed, 10))
    pages = []
    after = None
    while page := store.ids(after, 7):
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert [fid for page in pages for fid in page] == fids
    assert store.ids(fids[10], 3) == fids[11:14]
    for bad_limit in (0, MAX_PAGE + 1):
        with pytest.raises(ValueError, match="limit"):
            store.ids(None, bad_limit)


def test_delete_removes_and_frees_space(store, harness):
    fid, data = make_fragment(1, 300)
    other_id, other = make_fragment(2, 200)
    store.put(fid, data)
    store.put(other_id, other)
    assert store.delete(fid) is True
    assert store.delete(fid) is False
    assert not store.has(fid)
    with pytest.raises(FragmentNotFound):
        store.get(fid)
    assert (store.usage().fragments, store.usage().bytes_used) == (1, 200)
    assert harness.stray_files(store) == []
    store.put(fid, data)
    assert store.get(fid) == data


def test_concurrent_puts_never_overshoot_the_quota(harness):
    store = harness.open(450)
    fragments = [make_fragment(seed, 100) for seed in range(8)]
    barrier = threading.Barrier(len(fragments))

    def put(fragment):
        barrier.wait()
        try:
            store.put(*fragment)
        except QuotaExceeded:
            return False
        return True

    with ThreadPoolExecutor(len(fragments)) as pool:
        outcomes = list(pool.map(put, fragments))
    assert outcomes.count(True) == 4
    assert store.usage().bytes_used == 400
    assert sorted(store.ids(None, 100)) == sorted(
        fid for (fid, _), ok in zip(fragments, outcomes, strict=True) if ok
    )
    assert harness.stray_files(store) == []


def test_concurrent_puts_of_one_fragment_store_it_once(harness):
    store = harness.open(1000)
    fragment = make_fragment(1, 600)  # two bookings of 600 would not fit: they must not both book
    barrier = threading.Barrier(6)

    def put(_):
        barrier.wait()
        store.put(*fragment)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(put, range(6)))
    assert (store.usage().fragments, store.usage().bytes_used) == (1, 600)
    assert store.get(fragment[0]) == fragment[1]


def test_a_disk_that_refuses_writes_keeps_serving_reads_and_says_why(store, harness):
    kept_id, kept = make_fragment(1, 1000)
    store.put(kept_id, kept)
    new_id, new = make_fragment(2, 1000)
    with harness.writes_refused(store) as strerror:
        assert store.usage().writable  # nothing has been refused yet
        with pytest.raises(StoreNotWritable, match=strerror) as refused:
            store.put(new_id, new)
        assert str(refused.value).startswith("store is not writable: cannot write fragment")
        assert new_id.hex()[:16] in str(refused.value)
        usage = store.usage()
        assert not usage.writable
        assert strerror in usage.reason
        assert usage.write_refusal == usage.reason
        assert store.get(kept_id) == kept
        with pytest.raises(StoreError, match=strerror):
            store.delete(kept_id)
        assert store.has(kept_id)
        assert not store.has(new_id)
        assert usage.bytes_used == 1000
    store.put(new_id, new)  # the disk is back: the next write succeeds and clears the reason
    assert store.get(new_id) == new
    assert (store.usage().writable, store.usage().reason) == (True, None)
    assert harness.stray_files(store) == []


def test_a_closed_store_refuses_every_call(store):
    fid, data = make_fragment(1, 10)
    store.put(fid, data)
    store.close()
    store.close()
    for call in (lambda: store.get(fid), lambda: store.put(fid, data), store.usage):
        with pytest.raises(StoreError, match="closed"):
            call()


def test_a_disk_store_opens_read_only_when_the_disk_refuses_writes(tmp_path):
    fid, data = make_fragment(1, 1000)
    with DiskFragmentStore(tmp_path, MiB) as store:
        store.put(fid, data)
    (tmp_path / "tmp" / "leftover.part").write_bytes(b"half")
    with disk_refuses_writes(tmp_path) as strerror, DiskFragmentStore(tmp_path, MiB) as store:
        usage = store.usage()
        assert not usage.writable
        assert "leftover.part" in usage.reason
        assert strerror in usage.reason
        assert store.recovered.refusal == usage.reason
        assert store.get(fid) == data
    with DiskFragmentStore(tmp_path, MiB) as store:
        assert store.recovered.tmp_removed == 1
        assert store.usage().writable


# --- per-identity shares ---------------------------------------------------------------------

ALICE, MALLORY = b"\xa1" * 20, b"\x6d" * 20


def test_one_uploader_stops_at_its_share_while_others_still_fit(harness):
    store = harness.open(1000, identity_quota=500)
    first_id, first = make_fragment(1, 300)
    store.put(first_id, first, MALLORY)
    junk_id, junk = make_fragment(2, 250)
    with pytest.raises(QuotaExceeded) as refused:
        store.put(junk_id, junk, MALLORY)
    assert refused.value.identity == MALLORY
    message = str(refused.value)
    for part in (MALLORY.hex()[:8], "300 bytes here", "500 bytes one identity", "250 bytes"):
        assert part in message
    assert "another node" in message
    assert not store.has(junk_id) and harness.stray_files(store) == []
    usage = store.usage()
    assert (usage.quota_refused, usage.write_refusal) == (0, None)  # the store is not full
    assert store.uploaded_by(MALLORY) == 300
    honest_id, honest = make_fragment(3, 400)
    store.put(honest_id, honest, ALICE)  # another identity still has room
    own_id, own = make_fragment(4, 250)
    store.put(own_id, own)  # the node's own fragment: bounded by the quota only
    assert store.uploaded_by(ALICE) == 400
    assert store.usage().bytes_used == 950
    assert store.delete(first_id)
    assert store.uploaded_by(MALLORY) == 0
    store.put(junk_id, junk, MALLORY)  # room again for it, once it holds less
    assert store.uploaded_by(MALLORY) == 250


def test_a_share_defaults_to_a_quarter_of_the_quota(harness):
    store = harness.open(1000)
    store.put(*make_fragment(1, 250), MALLORY)
    with pytest.raises(QuotaExceeded, match="250 bytes one identity"):
        store.put(*make_fragment(2, 1), MALLORY)


def test_a_fragment_already_held_is_charged_to_its_first_uploader_only(harness):
    store = harness.open(1000, identity_quota=500)
    fid, data = make_fragment(1, 300)
    store.put(fid, data, ALICE)
    store.put(fid, data, MALLORY)  # a no-op: nothing new is stored
    assert (store.uploaded_by(ALICE), store.uploaded_by(MALLORY)) == (300, 0)


def test_a_corrupt_fragment_leaves_its_uploader_s_books(harness):
    store = harness.open(1000, identity_quota=500)
    fid, data = make_fragment(1, 300)
    store.put(fid, data, MALLORY)
    harness.corrupt(store, fid)
    with pytest.raises(IntegrityError):
        store.get(fid)
    assert store.uploaded_by(MALLORY) == 0


@pytest.mark.parametrize("bad", [b"", b"x" * 19, b"x" * 32, "ab" * 10])
def test_malformed_uploaders_are_refused(store, bad):
    with pytest.raises(ValueError, match="20-byte node id"):
        store.put(*make_fragment(1, 10), bad)
    assert store.usage().fragments == 0


def test_concurrent_puts_of_one_uploader_never_overshoot_its_share(harness):
    store = harness.open(10_000, identity_quota=450)
    fragments = [make_fragment(seed, 100) for seed in range(8)]
    barrier = threading.Barrier(len(fragments))

    def put(fragment):
        barrier.wait()
        try:
            store.put(*fragment, MALLORY)
        except QuotaExceeded as refused:
            assert refused.identity == MALLORY
            return False
        return True

    with ThreadPoolExecutor(len(fragments)) as pool:
        outcomes = list(pool.map(put, fragments))
    assert outcomes.count(True) == 4
    assert store.uploaded_by(MALLORY) == store.usage().bytes_used == 400
    assert harness.stray_files(store) == []
