"""The routing table's contacts, saved in the data directory so a restarted node can rejoin alone.

Why: a node that only knows its ``[bootstrap]`` peers cannot come back while they are down (a
mesh-wide power cut, a seed being upgraded).  Its routing table knew dozens of other nodes; this
file remembers them across a restart.  Nothing in it is trusted: each saved contact is dialled
with its saved node id as the one its TLS certificate must prove (see :meth:`Dht.join`), so a
stale or tampered file can cost a few failed dials, never admit a wrong peer.

Format: one msgpack map ``{"format": "p2pstore-contacts", "version": 1, "contacts": [[node_id,
address, datacenter, region], ...]}``, at most :data:`MAX_SAVED` contacts, the healthiest and most
recently heard from first.  Written atomically (a temporary file, fsync, rename, fsync of the
directory), so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import msgpack
import trio

from p2pstore.core.contact import Contact
from p2pstore.core.routing import RoutingTable
from p2pstore.errors import LocalProtocolError, StoreError
from p2pstore.store.directory import replace_file_durably

log = logging.getLogger("p2pstore.node")

FILE_NAME = "contacts.msgpack"
FORMAT = "p2pstore-contacts"
VERSION = 1
MAX_SAVED = 256
"""Contacts kept: plenty to rejoin through (k answering ones are enough), small to read."""
MAX_FILE_BYTES = 256 * 1024
SAVE_INTERVAL = 300.0
"""Seconds between saves while the node runs (and once more at a clean stop)."""


def contacts_worth_saving(table: RoutingTable, limit: int = MAX_SAVED) -> list[Contact]:
    """Up to ``limit`` contacts of ``table``: fewest failures first, then most recently seen."""

    def health(contact: Contact) -> tuple[int, float, bytes]:
        liveness = table.liveness(contact.id)
        if liveness is None:
            return (0, 0.0, contact.id)
        return (liveness.failures, -liveness.last_seen, contact.id)

    return sorted(table.contacts(), key=health)[:limit]


class ContactBook:
    """The saved-contacts file of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME

    def load(self) -> list[Contact]:
        """The saved contacts; an empty list if there is no file yet.

        Raises :class:`StoreError` naming the file if it cannot be read or is not a contacts
        file (the caller logs it and joins through its bootstrap peers alone).  Malformed
        entries in a well-formed file are skipped.
        """
        try:
            with self.path.open("rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if len(raw) > MAX_FILE_BYTES:
            raise StoreError(f"{self.path} is over {MAX_FILE_BYTES} bytes: not a contacts file")
        try:
            document = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise StoreError(f"{self.path} is not valid msgpack: {exc}") from exc
        if not (
            isinstance(document, dict)
            and document.get("format") == FORMAT
            and document.get("version") == VERSION
            and isinstance(document.get("contacts"), list)
        ):
            raise StoreError(f"{self.path} is not a version {VERSION} {FORMAT} file")
        contacts = []
        for entry in document["contacts"][:MAX_SAVED]:
            contact = _contact(entry)
            if contact is not None:
                contacts.append(contact)
        return contacts

    def save(self, contacts: Sequence[Contact]) -> None:
        """Replace the file with ``contacts`` (at most :data:`MAX_SAVED`), atomically and
        durably.  Blocking.  Raises :class:`StoreError` naming the file if the disk refuses."""
        document = {
            "format": FORMAT,
            "version": VERSION,
            "contacts": [list(contact) for contact in contacts[:MAX_SAVED]],
        }
        data = msgpack.packb(document, use_bin_type=True)
        try:
            replace_file_durably(self.path, [data])
        except OSError as exc:
            raise StoreError(f"cannot save contacts to {self.path}: {exc.strerror or exc}") from exc

    async def save_logged(self, contacts: list[Contact], *, in_thread: bool) -> bool:
        """:meth:`save`, logging the outcome instead of raising; True if it was saved.

        An empty list is not saved: a node that could not rejoin (or lost every contact in a
        partition) must keep remembering whom it knew, for its next start."""
        if not contacts:
            return False
        try:
            if in_thread:
                await trio.to_thread.run_sync(self.save, contacts)
            else:
                self.save(contacts)
        except StoreError as exc:
            log.warning(
                "could not save the routing table's contacts: %s",
                exc,
                extra={"event": "contacts_save_failed"},
            )
            return False
        log.debug(
            "saved %d contacts to %s",
            len(contacts),
            self.path,
            extra={"event": "contacts_saved", "contacts": len(contacts)},
        )
        return True


def _contact(entry: object) -> Contact | None:
    if not (isinstance(entry, list) and len(entry) == 4):
        return None
    node_id, address, datacenter, region = entry
    if not (isinstance(node_id, bytes) and all(isinstance(v, str) for v in entry[1:])):
        return None
    try:
        return Contact(node_id, address, datacenter, region)
    except LocalProtocolError:
        return None
