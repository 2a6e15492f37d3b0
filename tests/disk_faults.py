"""A disk that refuses writes, for tests of stores and nodes: the kernel itself says no.

Not root: modes (files 0444, directories 0555; EACCES).  Root ignores modes, so there the paths
are made immutable (chattr +i, EPERM), which binds root too; the test is skipped where neither
works (a filesystem without the flag).  Everything is put back on the way out.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x10


def set_immutable(path: Path, on: bool) -> None:
    """chattr +i / -i of a file or a directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | _FS_IMMUTABLE_FL if on else flags[0] & ~_FS_IMMUTABLE_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags)
    finally:
        os.close(fd)


@contextlib.contextmanager
def refusing_writes(paths: Iterable[Path]) -> Iterator[str]:
    """Every one of ``paths`` refuses to be written, created in or removed from while inside.
    Yields the strerror the code under test will report."""
    paths = list(paths)
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in paths}
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield os.strerror(errno.EACCES)
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    done: list[Path] = []
    try:
        for path in paths:
            try:
                set_immutable(path, True)
            except OSError as error:
                pytest.skip(f"running as root and cannot chattr +i {path}: {error}")
            done.append(path)
        yield os.strerror(errno.EPERM)
    finally:
        for path in done:
            set_immutable(path, False)
