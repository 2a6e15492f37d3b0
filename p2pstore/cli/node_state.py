"""What a node remembers across restarts: the contacts of its routing table (to rejoin when
every bootstrap peer is down) and the DHT records it held (so a restart loses none).  Saved
every ``SAVE_INTERVAL`` in a worker thread; an unreadable file is logged, never fatal."""

from __future__ import annotations

import logging
import time

import trio

from p2pstore.core.contact import Contact
from p2pstore.errors import StoreError
from p2pstore.net.contact_book import SAVE_INTERVAL, ContactBook, contacts_worth_saving
from p2pstore.net.dht import Dht
from p2pstore.net.record_book import OldRecordsFile, RecordBook

log = logging.getLogger("p2pstore.node")


async def keep_state_saved(book: ContactBook, records: RecordBook, dht: Dht) -> None:
    """Save the routing table's contacts and the records held every ``SAVE_INTERVAL`` (in a
    worker thread: an fsync never stalls the node), so even a kill -9 loses little."""
    while True:
        await trio.sleep(SAVE_INTERVAL)
        await book.save_logged(contacts_worth_saving(dht.table), in_thread=True)
        await records.save_logged(dht.store, dht.wall_clock(), in_thread=True)


def restore_records(book: RecordBook, dht: Dht) -> None:
    """Hold again the records the last run saved (an unreadable file is logged, never fatal)."""
    try:
        loaded = book.load()
    except OldRecordsFile as exc:
        log.warning("not loading the saved records: %s", exc, extra={"event": "records_outdated"})
        return
    except StoreError as exc:
        log.warning(
            "ignoring the saved records: %s",
            exc,
            extra={"event": "records_unreadable"},
        )
        return
    started = time.monotonic()
    kept = dht.restore(loaded.records)
    dropped = len(loaded.records) - kept + loaded.malformed
    if kept or dropped:
        log.info(
            "holding again %d DHT records saved by the last run (%d expired, invalid, "
            "revoked or over their publisher's quota, dropped), verified in %.1fs",
            kept,
            dropped,
            time.monotonic() - started,
            extra={"event": "records_loaded", "records": kept, "dropped": dropped},
        )


def load_saved_contacts(book: ContactBook) -> list[Contact]:
    """The contacts saved by the last run (an unreadable file is logged, never fatal)."""
    try:
        saved = book.load()
    except StoreError as exc:
        log.warning(
            "ignoring the saved contacts, joining through the bootstrap peers only: %s",
            exc,
            extra={"event": "contacts_unreadable"},
        )
        return []
    if saved:
        log.info(
            "%d contacts saved by the last run will be dialled to rejoin",
            len(saved),
            extra={"event": "contacts_loaded", "contacts": len(saved)},
        )
    return saved
