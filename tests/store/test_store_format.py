"""The store-format marker: a store of SHA-256 ids (format 1) is refused, never scrubbed away."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.errors import StoreError
from p2pstore.store import MAX_PAGE, DiskFragmentStore
from p2pstore.store.directory import FORMAT_FILE, STORE_FORMAT, DataDirectory
from p2pstore.store.index import FragmentIndex

MiB = 1 << 20


def make_format_1_store(root: Path, count: int) -> dict[Path, bytes]:
    """A data directory as the previous release left it: no marker, files named by SHA-256,
    the same index schema.  Returns every file under it and its bytes."""
    directory = DataDirectory(root)
    index = FragmentIndex(directory.index_path)
    try:
        directory.make_layout()
        for seed in range(count):
            data = random.Random(seed).randbytes(1000 + seed)
            old_id = hashlib.sha256(data).digest()
            directory.write_atomic(old_id, data)
            index.insert(old_id, len(data))
    finally:
        index.close()
        directory.close()
    return snapshot(root)


def snapshot(root: Path) -> dict[Path, bytes]:
    return {
        path: path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "lock"
    }


def test_a_new_directory_is_marked_with_this_format(tmp_path):
    with DiskFragmentStore(tmp_path / "node", MiB):
        pass
    marker = (tmp_path / "node" / FORMAT_FILE).read_text()
    assert marker == f"p2pstore fragment store, format {STORE_FORMAT}\n"
    data = b"kept"
    with DiskFragmentStore(tmp_path / "node", MiB) as store:  # reopening keeps it
        store.put(fragment_id(data), data)
    with DiskFragmentStore(tmp_path / "node", MiB) as store:
        assert store.get(fragment_id(data)) == data
        assert store.recovered.clean


def test_a_format_1_store_is_refused_at_open_saying_what_to_do_and_nothing_is_deleted(tmp_path):
    root = tmp_path / "node"
    before = make_format_1_store(root, 5)
    assert len(before) == 6  # five fragments and the index
    with pytest.raises(StoreError) as refused:
        DiskFragmentStore(root, MiB)
    message = str(refused.value)
    assert "format 1" in message and "SHA-256" in message
    assert "previous p2pstore release" in message and "empty data directory" in message
    assert snapshot(root) == before  # not a byte changed, no marker written
    assert not (root / FORMAT_FILE).exists()
    with pytest.raises(StoreError, match="format 1"):  # and again: the refusal is stable
        DiskFragmentStore(root, MiB)
    DataDirectory(root).close()  # the refusal released the directory's lock


def test_a_format_1_store_without_fragment_files_is_adopted(tmp_path):
    """Nothing in it could be misjudged: a node upgraded before it stored anything just runs."""
    root = tmp_path / "node"
    make_format_1_store(root, 0)
    with DiskFragmentStore(root, MiB) as store:
        assert store.ids(None, MAX_PAGE) == []
    assert (root / FORMAT_FILE).is_file()


@pytest.mark.parametrize(
    ("text", "advice"),
    [
        (f"p2pstore fragment store, format {STORE_FORMAT + 1}\n", "upgrade p2pstore"),
        ("p2pstore fragment store, format 1\n", "release that wrote it"),
        ("something else\n", "does not name a store format"),
    ],
)
def test_a_marker_of_another_format_is_refused(tmp_path, text, advice):
    root = tmp_path / "node"
    data = b"kept either way"
    with DiskFragmentStore(root, MiB) as store:
        store.put(fragment_id(data), data)
    (root / FORMAT_FILE).write_text(text)
    before = snapshot(root)
    with pytest.raises(StoreError, match=advice):
        DiskFragmentStore(root, MiB)
    assert snapshot(root) == before


def test_an_unreadable_marker_is_refused(tmp_path):
    root = tmp_path / "node"
    with DiskFragmentStore(root, MiB):
        pass
    (root / FORMAT_FILE).unlink()
    (root / FORMAT_FILE).mkdir()  # reading it fails as an unreadable file would, even as root
    with pytest.raises(StoreError, match="cannot read"):
        DiskFragmentStore(root, MiB)
