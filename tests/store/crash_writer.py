"""Helper process for test_store_crash.py: put fragments into a disk store until killed.

Usage: ``python crash_writer.py DATA_DIR SEED [POINT N]``.  Prints "ready", then for each
fragment "writing" as its ``put`` starts and its hex id once ``put`` has returned (so the parent
knows it must survive), flushing each line.
With POINT and N, the N-th put stops at that point of the write path instead, prints
"stopped <hex id>" and blocks until the parent kills it, as if the process died right there.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.store import DiskFragmentStore
from p2pstore.store.index import FragmentIndex

_armed_for: list[bytes] = []  # the id whose write path must stop, once armed


def _stop() -> None:
    print(f"stopped {_armed_for[0].hex()}", flush=True)
    sys.stdin.read()  # the parent never writes: this blocks until SIGKILL
    raise SystemExit("the parent closed stdin instead of killing this process")


def _armed() -> bool:
    return bool(_armed_for)


def _wrap(owner: Any, name: str, *, before: bool, partial: bool = False) -> None:
    real: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any) -> Any:
        if not _armed():
            return real(*args)
        if partial:  # os.write(fd, view): write half, then die
            real(args[0], args[1][: len(args[1]) // 2])
            _stop()
        if before:
            _stop()
        result = real(*args)
        _stop()
        return result

    setattr(owner, name, wrapper)


POINTS = {
    "mid-write": lambda: _wrap(os, "write", before=True, partial=True),
    "before-rename": lambda: _wrap(os, "replace", before=True),
    "before-dir-fsync": lambda: _wrap(os, "replace", before=False),
    "before-index": lambda: _wrap(FragmentIndex, "insert", before=True),
    "after-index": lambda: _wrap(FragmentIndex, "insert", before=False),
    "delete-before-index": lambda: _wrap(FragmentIndex, "remove", before=True),
}


def main() -> None:
    data_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    point, stop_at = (sys.argv[3], int(sys.argv[4])) if len(sys.argv) > 3 else (None, -1)
    if point is not None:
        POINTS[point]()
    rng = random.Random(seed)
    store = DiskFragmentStore(data_dir, quota_bytes=1 << 40)
    print("ready", flush=True)
    count = 0
    while True:
        data = rng.randbytes(rng.randrange(1, 256 * 1024))
        fid = fragment_id(data)
        count += 1
        if count == stop_at and point == "delete-before-index":
            store.put(fid, data)
            print(fid.hex(), flush=True)
            _armed_for.append(fid)
            store.delete(fid)
        if count == stop_at:
            _armed_for.append(fid)
        print("writing", flush=True)
        store.put(fid, data)
        print(fid.hex(), flush=True)


if __name__ == "__main__":
    main()
