"""Open-time recovery: make the index agree with the fragment files after any crash.

Why: a process can die (kill -9, power loss) between any two steps of a put or a delete.  The
write order makes every such state recoverable, and this module recovers it:

* a file in ``tmp/`` is a write that never finished: delete it;
* a fragment file with no index row was renamed in but not yet indexed (or its row was lost with
  a power cut): hash it; index it if it is good, delete it if not;
* an index row with no file is a delete (or a loss) that the index did not hear of: drop the row.

It works one prefix directory at a time, so memory stays near 1/256 of the index whatever the
store's size, and it only hashes files that have no row.  Disk refusals (a read-only disk) do not
stop the store from opening for reads: they are recorded in ``refusal``.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pstore.codec.fragment_ids import FRAGMENT_ID_BYTES
from p2pstore.store.directory import PREFIXES, DataDirectory
from p2pstore.store.index import FragmentIndex

_HEX_NAME_LENGTH = 2 * FRAGMENT_ID_BYTES


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What opening a disk store found and repaired, for the node to log."""

    tmp_removed: int = 0
    orphans_indexed: int = 0
    orphans_removed: int = 0
    rows_dropped: int = 0
    unknown_entries: int = 0
    refusal: str | None = None

    def __post_init__(self) -> None:
        counts = (
            self.tmp_removed,
            self.orphans_indexed,
            self.orphans_removed,
            self.rows_dropped,
            self.unknown_entries,
        )
        if min(counts) < 0:
            raise ValueError(f"reconciliation counts must be >= 0, got {self}")

    @property
    def clean(self) -> bool:
        """True when there was nothing to repair."""
        return self == Reconciliation()

    def __str__(self) -> str:
        text = (
            f"removed {self.tmp_removed} unfinished writes, re-indexed {self.orphans_indexed} "
            f"and removed {self.orphans_removed} corrupt unindexed fragment files, dropped "
            f"{self.rows_dropped} index rows without a file, ignored {self.unknown_entries} "
            f"unknown entries"
        )
        if self.refusal is not None:
            text += f"; not writable: {self.refusal}"
        return text


def reconcile(directory: DataDirectory, index: FragmentIndex) -> Reconciliation:
    """Bring ``index`` in line with the files of ``directory`` (see the module docstring).

    Raises StoreError if the index fails, OSError if a directory cannot be listed.
    """
    refusals: list[str] = []
    try:
        directory.make_layout()
    except OSError as error:
        refusals.append(f"cannot create the layout of {directory.root}: {error}")
    tmp_removed = 0
    for leftover in directory.tmp_entries():
        try:
            directory.unlink(leftover)
            tmp_removed += 1
        except OSError as error:
            refusals.append(f"cannot clean {leftover}: {error}")
            break
    orphans_indexed = orphans_removed = rows_dropped = unknown = 0
    for first_byte, prefix in enumerate(PREFIXES):
        indexed = index.rows_with_prefix(first_byte)
        on_disk: dict[bytes, int] = {}
        for entry in directory.prefix_entries(prefix):
            fragment_id = _id_of(entry.name, prefix)
            if fragment_id is None or not entry.is_file(follow_symlinks=False):
                unknown += 1
            else:
                on_disk[fragment_id] = entry.stat(follow_symlinks=False).st_size
        with index.transaction():
            for fragment_id in sorted(indexed.keys() - on_disk.keys()):
                index.remove(fragment_id)
                rows_dropped += 1
            for fragment_id in sorted(on_disk.keys() - indexed.keys()):
                path = directory.path_of(fragment_id)
                size = on_disk[fragment_id]
                digest, read, _ = directory.digest(path, size + 1)
                if digest == fragment_id and read == size:
                    index.insert(fragment_id, size)
                    orphans_indexed += 1
                    continue
                try:
                    directory.unlink(path)
                    orphans_removed += 1
                except OSError as error:  # never served anyway: it has no row, and is hashed
                    refusals.append(f"cannot remove corrupt {path}: {error}")
    return Reconciliation(
        tmp_removed=tmp_removed,
        orphans_indexed=orphans_indexed,
        orphans_removed=orphans_removed,
        rows_dropped=rows_dropped,
        unknown_entries=unknown,
        refusal="; ".join(refusals[:3]) or None,
    )


def _id_of(name: str, prefix: str) -> bytes | None:
    """The id a fragment file name spells, or None if it is not one of ours."""
    if len(name) != _HEX_NAME_LENGTH or not name.startswith(prefix):
        return None
    try:
        fragment_id = bytes.fromhex(name)
    except ValueError:
        return None
    return fragment_id if fragment_id.hex() == name else None  # lowercase only
