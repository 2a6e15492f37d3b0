"""A node's saved bucket entries: a round trip, a stop saves, a restart verifies them again,
and a damaged or hostile file costs nothing but its own entries."""

from __future__ import annotations

import dataclasses
import hashlib

import msgpack
import pytest
import trio

from p2pstore.core.bucket_entries import Op, bucket_id, sign_entry
from p2pstore.errors import StoreError
from p2pstore.identity import Role
from p2pstore.net.bucket_book import FILE_NAME, BucketBook
from p2pstore.net.buckets import BucketService, BucketSettings
from p2pstore.testing.storage_mesh import StorageMesh

TOKEN = hashlib.sha256(b"photos").digest()
BUCKET = bucket_id("acme", TOKEN)
SETTINGS = BucketSettings(
    replicas=3, anti_entropy_interval=3600.0, save_interval=3600.0, in_threads=False
)


def entries(signer, now: float, count: int):
    return [
        sign_entry(
            signer,
            bucket_token=TOKEN,
            name=hashlib.sha256(f"n{i}".encode()).digest(),
            op=Op.PUT,
            timestamp=int(now * 1000) - i,
            payload=b"sealed",
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("net", ["memory"], indirect=True)  # files, not transports, matter
async def test_a_stopped_replica_saves_and_another_start_verifies_them_again(
    net, autojump_clock, tmp_path
):
    mesh = StorageMesh(net, 3)
    book_dir = tmp_path / "node-data"
    book_dir.mkdir()
    first = BucketService(mesh.nodes[0].dht, SETTINGS, book=BucketBook(book_dir, 1000))
    tenant = net.credentials(datacenter="office", region="FR-GES", role=Role.CLIENT, tenant="acme")
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            batch = entries(tenant, mesh.wall_clock(), 5)
            async with trio.open_nursery() as node:
                await node.start(first.run)
                assert first.replica.push(BUCKET, batch, mesh.wall_clock(), trust=mesh.trust).added
                await trio.sleep(1)
                node.cancel_scope.cancel()  # the node stops: a last save
            assert (book_dir / FILE_NAME).exists()
            # A forged entry slipped into the file is dropped at the next start, the rest held.
            loaded = BucketBook(book_dir, 1000).load()
            assert len(loaded.entries) == 5
            forged = dataclasses.replace(batch[0], payload=b"altered")
            BucketBook(book_dir, 1000).save([*loaded.entries, (BUCKET, forged)])
            second = BucketService(mesh.nodes[1].dht, SETTINGS, book=BucketBook(book_dir, 1000))
            assert await second.restore() == 5
            assert len(second.replica.index(BUCKET)) == 5
            nursery.cancel_scope.cancel()


def test_a_damaged_file_is_refused_as_a_whole_and_junk_entries_are_counted(tmp_path):
    book = BucketBook(tmp_path, 3)
    assert book.load().entries == []
    (tmp_path / FILE_NAME).write_bytes(b"\x00not msgpack at all")
    with pytest.raises(StoreError, match="not a version 1"):
        book.load()
    header = msgpack.packb({"format": "p2pstore-buckets", "version": 1})
    junk = [msgpack.packb(x) for x in ([b"x" * 20, b"junk"], "text", [1, 2, 3], [b"y", b""])]
    (tmp_path / FILE_NAME).write_bytes(header + b"".join(junk))
    loaded = book.load()
    assert loaded.entries == [] and loaded.malformed == 3  # stops at max_entries
