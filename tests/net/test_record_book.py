"""Saved records: the file round-trips, refuses garbage and skips what does not decode, and a
restarted node holds again only the records that still verify (expired, forged, uncertified and
revoked ones are dropped), so it goes on serving them and stewarding the objects it is closest
to; a file of the previous format (records without certificates) is refused, saying so."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import random
from datetime import UTC, datetime

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hostile import forge_record, junk_manifests
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.record_store import held_size
from p2pstore.core.records import RecordKind, sign_record
from p2pstore.errors import StoreError
from p2pstore.identity import MeshCA, NodeCredentials
from p2pstore.net.record_book import FILE_NAME, FORMAT, VERSION, OldRecordsFile, RecordBook
from p2pstore.testing.dht_mesh import EPOCH, FAST_DHT, DhtMesh, wall_clock
from p2pstore.wire import SignedRecord
from p2pstore.wire.schema import schema_of


def records_of(
    publishers: list[NodeCredentials], count: int, *, expires_at: int, seed: int = 1
) -> list[SignedRecord]:
    rng = random.Random(seed)
    return [
        sign_record(
            publishers[i % len(publishers)],
            RecordKind.PLACEMENT,
            rng.randbytes(20),
            rng.randbytes(rng.randrange(1, 300)),
            sequence=i,
            expires_at=expires_at,
        )
        for i in range(count)
    ]


BIG = 1 << 30


@pytest.fixture(scope="module")
def mesh() -> list[NodeCredentials]:
    """Three publishers' credentials (the records' signers)."""
    now = datetime.now(UTC)
    ca = MeshCA.create_in_memory(mesh_name="test", now=now)
    return [ca.issue_in_memory(datacenter=f"dc-{i}", region="FR-GES", now=now) for i in range(3)]


def test_records_round_trip_and_no_temporary_file_is_left(tmp_path, mesh):
    book = RecordBook(tmp_path, max_records=100, max_bytes=BIG)
    assert book.load().records == []  # no file yet: nothing saved, not an error
    saved = records_of(mesh, 7, expires_at=2_000_000_000)
    book.save(saved)
    loaded = book.load()
    assert (loaded.records, loaded.malformed) == (saved, 0)
    book.save(saved[:2])
    assert book.load().records == saved[:2]
    book.save([])
    assert book.load().records == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


def test_at_most_max_records_are_saved_or_read(tmp_path, mesh):
    saved = records_of(mesh, 12, expires_at=2_000_000_000)
    RecordBook(tmp_path, max_records=5, max_bytes=BIG).save(saved)
    assert RecordBook(tmp_path, max_records=100, max_bytes=BIG).load().records == saved[:5]
    RecordBook(tmp_path, max_records=100, max_bytes=BIG).save(saved)
    assert RecordBook(tmp_path, max_records=4, max_bytes=BIG).load().records == saved[:4]


def _stream(*values: object) -> bytes:
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join(packer.pack(value) for value in values)


HEADER = {"format": FORMAT, "version": VERSION}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "not a version 2"),
        (b"\xc1\xc1\xc1", "not valid msgpack"),
        (_stream({"format": "p2pstore-contacts", "version": 2}), "not a version 2"),
        (_stream({"format": FORMAT, "version": 3}), "newer than this p2pstore reads (2)"),
        (_stream([1, 2, 3]), "not a version 2"),
        (_stream(HEADER, b"x" * (9 * 1024 * 1024)), "not valid msgpack"),  # an oversized entry
    ],
    ids=["empty", "garbage", "contacts file", "future version", "no header", "oversized entry"],
)
def test_a_file_that_is_not_a_records_file_is_refused_naming_it(tmp_path, content, problem):
    (tmp_path / FILE_NAME).write_bytes(content)
    with pytest.raises(StoreError) as refused:
        RecordBook(tmp_path, max_records=10, max_bytes=BIG).load()
    assert FILE_NAME in str(refused.value) and problem in str(refused.value)


def test_malformed_entries_are_counted_and_skipped(tmp_path, mesh):
    good = records_of(mesh, 2, expires_at=2_000_000_000)
    fields = schema_of(SignedRecord).values
    (tmp_path / FILE_NAME).write_bytes(
        _stream(HEADER, fields(good[0]), "a string", [1, b"short key"], {"a": 1}, fields(good[1]))
    )
    loaded = RecordBook(tmp_path, max_records=10, max_bytes=BIG).load()
    assert (loaded.records, loaded.malformed) == (good, 3)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_after_the_header_load_or_are_refused(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / FILE_NAME).write_bytes(_stream(HEADER) + data)
    try:
        loaded = RecordBook(directory, max_records=50, max_bytes=BIG).load()
    except StoreError as refused:
        assert FILE_NAME in str(refused)
    else:
        assert len(loaded.records) + loaded.malformed <= 50


async def test_a_restored_store_keeps_only_records_that_still_verify(tmp_path, autojump_clock):
    mesh = DhtMesh(3)
    publishers = [member.credentials for member in mesh.members]
    now = int(wall_clock())
    fresh = records_of(publishers, 4, expires_at=now + 3600)
    expired = records_of(publishers, 2, expires_at=now - 1, seed=2)
    forged = dataclasses.replace(fresh[0], value=fresh[0].value + b"!")
    throwaway = forge_record(
        Ed25519PrivateKey.generate(), RecordKind.PLACEMENT, bytes(20), b"x", expires_at=now + 60
    )
    issued = datetime.fromtimestamp(EPOCH, UTC)  # valid at the mesh's wall clock: only revoked
    revoked = mesh.ca.issue_in_memory(datacenter="dc-9", region="FR-GES", now=issued)
    by_revoked = records_of([revoked], 2, expires_at=now + 3600, seed=3)
    mesh.ca.revoke_in_memory(revoked.identity.serial, now=datetime.now(UTC))
    mesh.trust = mesh.ca.trust_anchor()  # what the node loads at start
    book = RecordBook(tmp_path, max_records=100, max_bytes=BIG)
    book.save([*fresh, *expired, forged, throwaway, *by_revoked])

    restarted = mesh.members[0].dht
    assert len(restarted.store) == 0
    assert restarted.restore(book.load().records) == len(fresh)
    held = restarted.store.records_for_refresh(wall_clock())
    assert sorted(held, key=lambda r: r.sequence) == fresh
    # Restoring twice holds nothing twice, and says it holds nothing new.
    assert restarted.restore(book.load().records) == 0
    assert len(restarted.store) == len(fresh)


def test_reading_stops_at_the_stores_byte_budget(tmp_path, mesh):
    saved = records_of(mesh, 10, expires_at=2_000_000_000)
    RecordBook(tmp_path, max_records=100, max_bytes=BIG).save(saved)
    budget = sum(len(r.value) for r in saved[:6])
    assert RecordBook(tmp_path, max_records=100, max_bytes=budget).load().records == saved[:6]


def test_a_records_path_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / FILE_NAME)  # opening a FIFO would wait for a writer forever
    with pytest.raises(StoreError, match="not a regular file"):
        RecordBook(tmp_path, max_records=10, max_bytes=BIG).load()


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, mesh, monkeypatch):
    book = RecordBook(tmp_path, max_records=100, max_bytes=BIG)
    saved = records_of(mesh, 3, expires_at=2_000_000_000)
    book.save(saved)
    real_fsync = os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StoreError, match="No space left"):
        book.save(records_of(mesh, 5, expires_at=2_000_000_000, seed=9))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert book.load().records == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


async def test_an_unchanged_store_is_not_written_again(tmp_path, autojump_clock, caplog):
    mesh = DhtMesh(2)
    store = mesh.members[0].dht.store
    publishers = [member.credentials for member in mesh.members]
    now = wall_clock()
    for record in records_of(publishers, 3, expires_at=int(now) + 3600):
        store.put(record, now, trust=mesh.trust)
    book = RecordBook(tmp_path, max_records=100, max_bytes=BIG)
    caplog.set_level(logging.DEBUG, logger="p2pstore")
    assert await book.save_logged(store, now, in_thread=True)
    (tmp_path / FILE_NAME).write_bytes((tmp_path / FILE_NAME).read_bytes())  # a new mtime
    touched = (tmp_path / FILE_NAME).stat().st_mtime_ns
    assert await book.save_logged(store, now, in_thread=True)  # nothing changed: not rewritten
    assert (tmp_path / FILE_NAME).stat().st_mtime_ns == touched
    store.put(
        records_of(publishers, 1, expires_at=int(now) + 3600, seed=5)[0], now, trust=mesh.trust
    )
    assert await book.save_logged(store, now, in_thread=True)
    assert len(book.load().records) == 4
    saves = [r for r in caplog.records if getattr(r, "event", None) == "records_saved"]
    assert [r.records for r in saves] == [3, 3, 4]


async def test_a_node_starts_despite_a_damaged_file_and_saves_its_records_every_interval(
    tmp_path, autojump_clock, caplog, log_events
):
    import trio

    from p2pstore.cli.node_state import keep_state_saved, restore_records
    from p2pstore.net.contact_book import SAVE_INTERVAL, ContactBook

    mesh = DhtMesh(2)
    dht = mesh.members[0].dht
    (tmp_path / FILE_NAME).write_bytes(b"\x00 not msgpack records")
    book = RecordBook(tmp_path, max_records=100, max_bytes=BIG)
    restore_records(book, dht)  # logged, never fatal
    (warning,) = [r for r in caplog.records if getattr(r, "event", None) == "records_unreadable"]
    assert FILE_NAME in warning.getMessage() and len(dht.store) == 0

    publishers = [member.credentials for member in mesh.members]
    (record,) = records_of(publishers, 1, expires_at=int(wall_clock()) + 3 * 3600)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_state_saved, ContactBook(tmp_path), book, dht)
        await trio.sleep(SAVE_INTERVAL / 2)
        dht.store.put(record, wall_clock(), trust=mesh.trust)
        with pytest.raises(StoreError):
            book.load()  # not yet rewritten
        saved = await log_events.wait_for(event="records_saved")
        assert saved.records == 1 and trio.current_time() >= SAVE_INTERVAL
        assert book.load().records == [record]  # rewritten at the interval, damage gone
        nursery.cancel_scope.cancel()


async def test_a_file_of_the_previous_format_is_refused_saying_what_happens(
    tmp_path, caplog, autojump_clock
):
    """Version 1 records carried no publisher certificate: no holder accepts them any more, so
    the file is not read; the node starts without them and their publishers republish."""
    old_entry = [2, bytes(20), b"placement", 1, 2_000_000_000, bytes(32), bytes(64)]
    (tmp_path / FILE_NAME).write_bytes(_stream({"format": FORMAT, "version": 1}, old_entry))
    book = RecordBook(tmp_path, max_records=10, max_bytes=BIG)
    with pytest.raises(OldRecordsFile) as refused:
        book.load()
    message = str(refused.value)
    assert FILE_NAME in message and "version 1" in message and "older p2pstore" in message
    assert "republish" in message

    from p2pstore.cli.node_state import restore_records

    mesh = DhtMesh(1)
    restore_records(book, mesh.members[0].dht)  # logged, never fatal
    (warning,) = [r for r in caplog.records if getattr(r, "event", None) == "records_outdated"]
    assert "republish" in warning.getMessage() and len(mesh.members[0].dht.store) == 0


async def test_a_saved_flood_is_held_again_only_up_to_its_publisher_s_quota(
    tmp_path, autojump_clock
):
    """Issue 13's junk manifests were "saved and reloaded after restart".  A file holding four
    times one member's quota of junk (saved by a run with a larger record store, say) is held
    again only up to that quota, whatever comes first in the file; every record of another
    publisher comes back."""
    settings = dataclasses.replace(FAST_DHT, max_record_bytes=1 << 20)
    mesh = DhtMesh(3, settings=settings)
    flooder, honest = mesh.members[1].credentials, mesh.members[2].credentials
    now = int(wall_clock())
    junk = junk_manifests(flooder, 16, 64 * 1024, expires_at=now + 3600, seed=4)
    theirs = records_of([honest], 8, expires_at=now + 3600)
    book = RecordBook(tmp_path, max_records=1000, max_bytes=BIG)
    book.save([*junk, *theirs])

    restarted = mesh.members[0].dht
    kept = restarted.restore(book.load().records)
    store = restarted.store
    usage = store.usage_of(flooder.identity.node_id)
    assert usage.bytes <= store.max_publisher_bytes < usage.bytes + held_size(junk[0])
    assert usage.records < len(junk) // 2
    assert store.usage_of(honest.identity.node_id).records == len(theirs)
    assert kept == usage.records + len(theirs)
