"""Saved contacts: the file round-trips and refuses garbage, and a node restarted with its
bootstrap peer gone rejoins through the contacts it saved (on the in-memory network)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import msgpack
import pytest
import trio

from p2pstore.core.contact import Contact
from p2pstore.core.routing import RoutingTable
from p2pstore.errors import PeerUnreachable, StoreError
from p2pstore.net.contact_book import (
    FILE_NAME,
    MAX_FILE_BYTES,
    MAX_SAVED,
    ContactBook,
    contacts_worth_saving,
)
from p2pstore.net.dht import Dht
from p2pstore.net.node import Node
from p2pstore.testing.dht_mesh import DhtMesh, wall_clock


def contact(index: int) -> Contact:
    return Contact(index.to_bytes(20, "big"), f"10.0.0.{index % 250}:7400", "dc-1", "FR-GES")


def test_contacts_round_trip_and_no_temporary_file_is_left(tmp_path):
    book = ContactBook(tmp_path)
    assert book.load() == []  # no file yet: nothing saved, not an error
    saved = [contact(i) for i in range(1, 6)]
    book.save(saved)
    assert book.load() == saved
    book.save(saved[:2])
    assert book.load() == saved[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


def test_at_most_max_saved_contacts_are_kept(tmp_path):
    book = ContactBook(tmp_path)
    book.save([contact(i) for i in range(1, MAX_SAVED + 50)])
    assert len(book.load()) == MAX_SAVED


@pytest.mark.parametrize(
    "content",
    [
        b"\xc1 not msgpack",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"format": "something-else", "version": 1, "contacts": []}),
        msgpack.packb({"format": "p2pstore-contacts", "version": 99, "contacts": []}),
        b"\x00" * (MAX_FILE_BYTES + 1),
    ],
    ids=["garbage", "a-list", "other-format", "future-version", "too-large"],
)
def test_a_file_that_is_not_a_contacts_file_is_refused_by_name(tmp_path, content):
    (tmp_path / FILE_NAME).write_bytes(content)
    with pytest.raises(StoreError, match=FILE_NAME):
        ContactBook(tmp_path).load()


def test_malformed_entries_are_skipped(tmp_path):
    good = contact(7)
    document = {
        "format": "p2pstore-contacts",
        "version": 1,
        "contacts": [
            [b"short", "10.0.0.1:7400", "dc", "FR"],
            ["not-bytes", "10.0.0.1:7400", "dc", "FR"],
            [good.id, "", "dc", "FR"],
            [good.id, "10.0.0.1:7400"],
            "a string",
            list(good),
        ],
    }
    (tmp_path / FILE_NAME).write_bytes(msgpack.packb(document, use_bin_type=True))
    assert ContactBook(tmp_path).load() == [good]


def test_a_disk_that_refuses_the_save_raises_naming_the_file(tmp_path):
    missing = tmp_path / "gone"
    with pytest.raises(StoreError, match="cannot save contacts"):
        ContactBook(missing).save([contact(1)])


async def test_an_empty_table_never_overwrites_what_was_saved(tmp_path):
    book = ContactBook(tmp_path)
    book.save([contact(1)])
    assert not await book.save_logged([], in_thread=False)
    assert book.load() == [contact(1)]


def test_healthy_recent_contacts_are_saved_first():
    table = RoutingTable(b"\x00" * 20, k=20, max_failures=3, now=0.0)
    old, recent, failing = contact(1 << 100), contact(1 << 101), contact(1 << 102)
    table.update(old, now=1.0)
    table.update(recent, now=5.0)
    table.update(failing, now=9.0)
    table.record_failure(failing.id, now=10.0)
    assert contacts_worth_saving(table) == [recent, old, failing]
    assert contacts_worth_saving(table, limit=1) == [recent]


async def test_a_restarted_node_rejoins_through_saved_contacts_with_its_bootstrap_gone(
    autojump_clock, tmp_path
):
    mesh = DhtMesh(6, seed=9)
    bootstrap, member = mesh.members[0], mesh.members[5]
    book = ContactBook(tmp_path)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            book.save(contacts_worth_saving(member.dht.table))
            assert len(book.load()) >= 2  # it learned more than its bootstrap peer
            mesh.vanish(member)  # the node stops ...
            mesh.vanish(bootstrap)  # ... and while it is away its bootstrap peer goes too

            async def restart(name: str, scope: trio.CancelScope) -> Dht:
                """The same identity on a new address, as after a restart elsewhere."""
                trust = mesh.trust
                transport = mesh.network.transport(name, member.credentials, trust)
                node = Node(member.credentials, transport, settings=member.node.settings)
                dht = Dht(node, lambda: trust, rng=random.Random(1), wall_clock=wall_clock)

                async def run(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
                    with scope:
                        async with trio.open_nursery() as inner:
                            await inner.start(node.run)
                            await inner.start(dht.run)
                            task_status.started()

                await nursery.start(run)
                return dht

            first_try = trio.CancelScope()
            alone = await restart("without-saved-contacts", first_try)
            with pytest.raises(PeerUnreachable, match="none of the 1 bootstrap peers"):
                await alone.join([bootstrap.node.address])
            assert not alone.joined
            first_try.cancel()

            rejoined = await restart("with-saved-contacts", trio.CancelScope())
            answered = await rejoined.join([bootstrap.node.address], known=book.load())
            assert answered == 0  # the bootstrap peer did not answer ...
            assert rejoined.joined  # ... the saved contacts did
            live = {m.node_id for m in mesh.live()}
            assert {c.id for c in rejoined.table.contacts()} <= live
            assert len(rejoined.table) == len(live)  # and the lookups found every live node
            nursery.cancel_scope.cancel()


async def test_a_saved_contact_must_still_prove_its_node_id(autojump_clock):
    """A tampered or stale file cannot point a node at an impostor: the dial expects the saved
    id, and the certificate of whoever answers must carry it."""
    mesh = DhtMesh(3, seed=4)
    first, second, third = mesh.members
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await mesh.start(nursery)
            newcomer_credentials = mesh.ca.issue_in_memory(
                datacenter="dc-9", region="FR-GES", now=datetime.now(UTC)
            )
            transport = mesh.network.transport("newcomer", newcomer_credentials, mesh.trust)
            node = Node(newcomer_credentials, transport)
            dht = Dht(node, lambda: mesh.trust, rng=random.Random(1), wall_clock=wall_clock)
            await nursery.start(node.run)
            lie = Contact(third.node_id, second.node.address, "dc-1", "FR-GES")  # wrong address
            with pytest.raises(PeerUnreachable, match="expected node"):
                await dht.join(["nobody-here"], known=[lie])
            assert second.node_id not in {v.identity.node_id for v in node.peers()}
            assert first.node_id not in dht.table
            nursery.cancel_scope.cancel()


async def test_saved_contacts_that_are_all_gone_do_not_stop_a_founder(autojump_clock, tmp_path):
    """A node whose bootstrap list names only itself founds the mesh: it joins alone, even when
    none of the contacts saved by its last run answers."""
    mesh = DhtMesh(2, seed=5)
    founder, gone = mesh.members
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(mesh._run_member, founder)
            stale = Contact(gone.node_id, gone.node.address, "dc-1", "FR-GES")  # never started
            assert await founder.dht.join([founder.node.address], known=[stale]) == 0
            assert founder.dht.joined
            nursery.cancel_scope.cancel()
