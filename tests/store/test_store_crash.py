"""kill -9 during writes: nothing partial is ever visible, nothing acknowledged is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.store import MAX_PAGE, DiskFragmentStore

WRITER = Path(__file__).with_name("crash_writer.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _start_writer(data_dir: Path, seed: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(data_dir), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _kill_after(writer: subprocess.Popen[str], lines: int) -> list[bytes]:
    """Read ``lines`` lines after "ready", then SIGKILL the writer; the acknowledged ids.

    Killing right after a "writing" line lands inside a put (creating or writing its temporary
    file), right after an id line lands between two puts.
    """
    assert writer.stdout is not None
    assert writer.stdout.readline() == "ready\n"
    texts = [writer.stdout.readline().strip() for _ in range(lines)]
    writer.send_signal(signal.SIGKILL)
    acknowledged = [bytes.fromhex(text) for text in texts if text != "writing"]
    writer.wait()
    writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    return acknowledged


def _files_hash_to_their_names(data_dir: Path) -> list[Path]:
    """Every file under fragments/ (before any recovery ran); fails on a partial one."""
    files = sorted(p for p in (data_dir / "fragments").rglob("*") if p.is_file())
    for path in files:
        assert fragment_id(path.read_bytes()).hex() == path.name, f"partial {path}"
    return files


def test_kill_9_during_writes_leaves_no_partial_fragment(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    data_dir = tmp_path / "node"
    acknowledged: set[bytes] = set()
    for round_ in range(3):
        writer = _start_writer(data_dir, seed + round_)
        acknowledged.update(_kill_after(writer, rng.randrange(1, 24)))
        on_disk = _files_hash_to_their_names(data_dir)
        with DiskFragmentStore(data_dir, quota_bytes=1 << 40) as store:
            stored = store.ids(None, MAX_PAGE)
            assert acknowledged <= set(stored), f"seed {seed}: an acknowledged put was lost"
            for fid in stored:
                assert fragment_id(store.get(fid)) == fid
            assert {p.name for p in on_disk} == {fid.hex() for fid in stored}, f"seed {seed}"
            assert list((data_dir / "tmp").iterdir()) == []
            usage = store.usage()
            assert usage.fragments == len(stored)
            assert usage.bytes_used == sum(p.stat().st_size for p in on_disk)
            assert store.recovered.orphans_removed == 0


# Where the N-th put (or delete) dies, and what the next open must find.
_CRASH_POINTS = {
    # point: (fragment present after recovery, Reconciliation field that must be 1)
    "mid-write": (False, "tmp_removed"),
    "before-rename": (False, "tmp_removed"),
    "before-dir-fsync": (True, "orphans_indexed"),
    "before-index": (True, "orphans_indexed"),
    "after-index": (True, None),
    "delete-before-index": (False, "rows_dropped"),
}


@pytest.mark.parametrize("point", sorted(_CRASH_POINTS))
def test_a_crash_at_each_step_of_the_write_path_is_recovered(tmp_path, point):
    present, repaired = _CRASH_POINTS[point]
    data_dir = tmp_path / "node"
    nth = random.randrange(1, 5)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(data_dir), "1", point, str(nth)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert writer.stdout is not None
    lines = []
    while not (line := writer.stdout.readline()).startswith("stopped"):
        assert line, f"the writer exited before reaching {point}"
        if line != "writing\n":
            lines.append(line.strip())
    victim = bytes.fromhex(line.split()[1])
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdin.close()
    writer.stdout.close()
    acknowledged = {bytes.fromhex(text) for text in lines[1:]} - {victim}
    _files_hash_to_their_names(data_dir)
    with DiskFragmentStore(data_dir, quota_bytes=1 << 40) as store:
        recovered = store.recovered
        assert store.has(victim) is present
        assert acknowledged <= set(store.ids(None, MAX_PAGE))
        for fid in store.ids(None, MAX_PAGE):
            assert fragment_id(store.get(fid)) == fid
        expected = dict.fromkeys(
            ("tmp_removed", "orphans_indexed", "orphans_removed", "rows_dropped"), 0
        )
        if repaired is not None:
            expected[repaired] = 1
        assert {name: getattr(recovered, name) for name in expected} == expected
        assert list((data_dir / "tmp").iterdir()) == []
        assert store.usage().fragments == len(store.ids(None, MAX_PAGE))
