"""The bucket index entries a node holds for the mesh, saved in the data directory across restarts.

Why: anti-entropy refills a restarted replica from the others, but a region-wide restart (a
power cut) would restart every replica of a bucket at once, and names are what a tenant finds
its objects by.  Nothing in the file is trusted: every entry is verified again on load exactly
as a peer's push is (signature, signer's certificate and tenant, revocation), and charged to its
tenant's quota like any other.

Format: a stream of msgpack values: the map ``{"format": "p2pstore-buckets", "version": 1}``,
then one ``[bucket id, entry bytes]`` array per entry (:func:`~p2pstore.wire.encode_entry`).
Reading stops at ``max_entries``; an entry over ``MAX_ENTRY_BYTES`` makes the file unreadable
(refused as a whole).  Written atomically and durably, only when the replica changed.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack

from p2pstore.core.bucket_replica import BucketReplica
from p2pstore.errors import RemoteProtocolError, StoreError
from p2pstore.identity import NODE_ID_BYTES, NodeId
from p2pstore.store.directory import replace_file_durably
from p2pstore.wire import BucketEntry, decode_entry, encode_entry
from p2pstore.wire.buckets import MAX_ENTRY_BYTES

log = logging.getLogger("p2pstore.buckets")

FILE_NAME = "buckets.msgpack"
FORMAT = "p2pstore-buckets"
VERSION = 1


@dataclass(frozen=True, slots=True)
class LoadedEntries:
    """What the file held: ``(bucket, entry)`` pairs that decode, and how many did not."""

    entries: list[tuple[NodeId, BucketEntry]]
    malformed: int


class BucketBook:
    """The saved bucket entries of one data directory."""

    def __init__(self, data_dir: Path, max_entries: int) -> None:
        self.path = data_dir / FILE_NAME
        self.max_entries = max_entries
        self.saved_changes: int | None = None
        """The replica's change count at the last save (None: not saved by this run)."""

    def load(self) -> LoadedEntries:
        """The saved entries, not yet verified (the caller pushes them through its replica);
        none if there is no file yet.  Raises :class:`StoreError` naming the file if it cannot
        be read or is not a buckets file."""
        try:
            if not stat.S_ISREG(self.path.lstat().st_mode):
                raise StoreError(f"{self.path} is not a regular file: not a buckets file")
            file = self.path.open("rb")
        except FileNotFoundError:
            return LoadedEntries([], 0)
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        with file:
            unpacker = msgpack.Unpacker(
                file, raw=False, use_list=False, strict_map_key=True,
                max_buffer_size=MAX_ENTRY_BYTES + 64,
            )  # fmt: skip
            try:
                items = iter(unpacker)
                header = next(items, None)
                if not (
                    isinstance(header, dict)
                    and header.get("format") == FORMAT
                    and header.get("version") == VERSION
                ):
                    raise StoreError(f"{self.path} is not a version {VERSION} {FORMAT} file")
                return self._read(items)
            except msgpack.BufferFull as exc:
                raise StoreError(f"{self.path}: an entry is over {MAX_ENTRY_BYTES} bytes") from exc
            except (ValueError, msgpack.FormatError, msgpack.StackError) as exc:
                raise StoreError(f"{self.path} is not valid msgpack: {exc}") from exc
            except OSError as exc:
                raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc

    def _read(self, items: Iterator[object]) -> LoadedEntries:
        entries: list[tuple[NodeId, BucketEntry]] = []
        malformed = 0
        for item in items:
            if len(entries) + malformed >= self.max_entries:
                break
            if not (
                isinstance(item, tuple)
                and len(item) == 2
                and isinstance(item[0], bytes)
                and len(item[0]) == NODE_ID_BYTES
                and isinstance(item[1], bytes)
            ):
                malformed += 1
                continue
            try:
                entries.append((NodeId(item[0]), decode_entry(item[1])))
            except RemoteProtocolError:
                malformed += 1
        return LoadedEntries(entries, malformed)

    @staticmethod
    def snapshot(replica: BucketReplica) -> list[tuple[NodeId, BucketEntry]]:
        """What :meth:`save` writes, taken where the replica lives (never in a worker thread
        while the node changes it)."""
        return [(bucket, verified.entry) for bucket, verified in replica.all_entries()]

    def save(self, held: list[tuple[NodeId, BucketEntry]]) -> None:
        """Replace the file with ``held`` (a :meth:`snapshot`), atomically and durably.
        Blocking.  Raises :class:`StoreError` naming the file if the disk refuses."""
        packer = msgpack.Packer(use_bin_type=True)

        def chunks() -> Iterator[bytes]:
            yield packer.pack({"format": FORMAT, "version": VERSION})
            for bucket, entry in held:
                yield packer.pack([bytes(bucket), encode_entry(entry)])

        try:
            replace_file_durably(self.path, chunks())
        except OSError as exc:
            raise StoreError(f"cannot save bucket entries to {self.path}: {exc}") from exc
