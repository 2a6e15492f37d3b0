"""The DHT records a node holds for the mesh, saved in the data directory across restarts.

Why: a node is one of the k holders of every record whose key it is close to: manifests,
placement records, announcements.  Records live in memory (:class:`RecordStore`); without this
file a restarted node comes back empty, so until the publishers' next republish (hours) the mesh
has one holder fewer for each of them, and the node no longer stewards the objects it is the
closest to (stewardship follows the manifests a node holds) -- a node restarted to be drained
would then wait for stewards that all defer to it.  Nothing in the file is trusted: every record
is verified again on load exactly as a peer's STORE is (signature, publisher's certificate,
expiry), and an expired one is dropped.

Format: a stream of msgpack values: first the map ``{"format": "p2pstore-records", "version":
2}``, then one array per record (the wire fields of :class:`SignedRecord`).  Version 2 records
carry their publisher's certificate; a version 1 file (records without one, which no holder
accepts any more) is refused as a whole with :class:`OldRecordsFile`: the node starts without
those records and their publishers' republishing brings them back.  Reading stops at the
store's own limits (``max_records`` records, ``max_bytes`` of values), so a damaged or hostile
file costs no more memory than a full store.  Written atomically (:func:`replace_file_durably`),
and only when the store changed since the last save.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgpack
import trio

from p2pstore.core.record_store import RecordStore
from p2pstore.errors import RemoteProtocolError, StoreError
from p2pstore.store.directory import replace_file_durably
from p2pstore.wire import MAX_RECORD_VALUE, SignedRecord
from p2pstore.wire.dht import MAX_PUBLISHER_CERTIFICATE
from p2pstore.wire.schema import decode_record, schema_of

log = logging.getLogger("p2pstore.node")

FILE_NAME = "records.msgpack"
FORMAT = "p2pstore-records"
VERSION = 2
MAX_ENTRY_BYTES = MAX_RECORD_VALUE + MAX_PUBLISHER_CERTIFICATE + 4096
"""The largest encoded record: its value and certificate plus key, signature, publisher key and
integers."""


class OldRecordsFile(StoreError):
    """The saved-records file was written by an older p2pstore (its records carry no
    publisher certificate): it is not loaded, the records come back as publishers republish."""


@dataclass(frozen=True, slots=True)
class LoadedRecords:
    """What the file held: the records that decode, and how many entries did not."""

    records: list[SignedRecord]
    malformed: int


class RecordBook:
    """The saved-records file of one data directory."""

    def __init__(self, data_dir: Path, max_records: int, max_bytes: int) -> None:
        self.path = data_dir / FILE_NAME
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.saved_changes: int | None = None
        """The store's change count at the last save (None: not saved by this run)."""

    def load(self) -> LoadedRecords:
        """The saved records (not yet verified: the caller puts them through its store);
        none if there is no file yet.

        Raises :class:`StoreError` naming the file if it cannot be read or is not a records
        file, :class:`OldRecordsFile` if an older p2pstore wrote it.  Malformed entries in a
        well-formed file are counted and skipped; entries past ``max_records``, or past
        ``max_bytes`` of values, are ignored."""
        try:
            if not stat.S_ISREG(self.path.lstat().st_mode):
                raise StoreError(f"{self.path} is not a regular file: not a records file")
            file = self.path.open("rb")
        except FileNotFoundError:
            return LoadedRecords([], 0)
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        with file:
            unpacker = msgpack.Unpacker(
                file, raw=False, use_list=False, strict_map_key=True,
                max_buffer_size=MAX_ENTRY_BYTES,
            )  # fmt: skip
            try:
                entries = iter(unpacker)
                header = next(entries, None)
                if not (
                    isinstance(header, dict)
                    and header.get("format") == FORMAT
                    and type(header.get("version")) is int
                ):
                    raise StoreError(f"{self.path} is not a version {VERSION} {FORMAT} file")
                if header["version"] < VERSION:
                    raise OldRecordsFile(
                        f"{self.path} is a version {header['version']} {FORMAT} file, written "
                        f"by an older p2pstore: its records carry no publisher certificate, "
                        f"which every holder now requires, so they are not loaded; their "
                        f"publishers republish them within a day (and the file is rewritten "
                        f"at the next save)"
                    )
                if header["version"] != VERSION:
                    raise StoreError(
                        f"{self.path} is a version {header['version']} {FORMAT} file, newer "
                        f"than this p2pstore reads ({VERSION}): upgrade p2pstore"
                    )
                return self._read_entries(entries)
            except msgpack.BufferFull as exc:
                raise StoreError(
                    f"{self.path} is not valid msgpack: an entry is over {MAX_ENTRY_BYTES} bytes"
                ) from exc
            except (ValueError, msgpack.FormatError, msgpack.StackError) as exc:
                raise StoreError(f"{self.path} is not valid msgpack: {exc}") from exc
            except OSError as exc:
                raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc

    def _read_entries(self, entries: Iterator[object]) -> LoadedRecords:
        records: list[SignedRecord] = []
        malformed = 0
        value_bytes = 0
        for entry in entries:
            if len(records) + malformed >= self.max_records:
                break
            if not isinstance(entry, tuple):
                malformed += 1
                continue
            try:
                record = decode_record(SignedRecord, entry)
            except RemoteProtocolError:
                malformed += 1
                continue
            value_bytes += len(record.value)
            if value_bytes > self.max_bytes:
                break
            records.append(record)
        return LoadedRecords(records, malformed)

    def save(self, records: Sequence[SignedRecord]) -> None:
        """Replace the file with ``records`` (at most ``max_records``), atomically and durably.
        Blocking.  Raises :class:`StoreError` naming the file if the disk refuses."""
        schema = schema_of(SignedRecord)
        packer = msgpack.Packer(use_bin_type=True)

        def chunks() -> Iterator[bytes]:
            yield packer.pack({"format": FORMAT, "version": VERSION})
            for record in records[: self.max_records]:
                yield packer.pack(schema.values(record))

        try:
            replace_file_durably(self.path, chunks())
        except OSError as exc:
            raise StoreError(f"cannot save records to {self.path}: {exc.strerror or exc}") from exc

    async def save_logged(
        self, store: RecordStore, now: float, *, in_thread: bool, level: int = logging.DEBUG
    ) -> bool:
        """Save the records ``store`` holds at ``now`` unless it has not changed since the last
        save, logging the outcome instead of raising (a success at ``level``: the save at a
        clean stop is worth an info line); True if the file is up to date."""
        changes = store.changes
        if changes == self.saved_changes:
            log.log(
                level,
                "the %d DHT records saved in %s are up to date",
                len(store),
                self.path,
                extra={"event": "records_saved", "records": len(store)},
            )
            return True
        records = store.records_for_refresh(now)
        try:
            if in_thread:
                await trio.to_thread.run_sync(self.save, records)
            else:
                self.save(records)
        except StoreError as exc:
            log.warning(
                "could not save the DHT records held here: %s",
                exc,
                extra={"event": "records_save_failed"},
            )
            return False
        self.saved_changes = changes
        log.log(
            level,
            "saved %d DHT records to %s for the next start",
            len(records),
            self.path,
            extra={"event": "records_saved", "records": len(records)},
        )
        return True
