"""Processes that start processes (``demo``, ``devnet``): run them in a process group of their own
and kill the whole group, not only the parent, when a test gives up on them; and see which
processes a parent started and when they are gone (pidfds: woken by the kernel, no polling)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def run_group(
    command: Sequence[str], *, timeout: float, **options: Any
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(command, capture_output=True, text=True)`` in a new session; on timeout
    every process of its group is killed (SIGKILL) before ``TimeoutExpired`` is raised."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        start_new_session=True,
        **options,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        process.communicate()
        raise
    finally:
        if process.poll() is None:
            kill_group(process.pid)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already empty
        os.killpg(pgid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (from /proc: Linux)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class Watched:
    """Processes (not our children) whose exit we can wait for, by pidfd."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.fds = {pid: os.pidfd_open(pid) for pid in pids}

    def wait_all_gone(self, timeout: float) -> list[int]:
        """Wait until every process exited; returns those still running at ``timeout``."""
        poller = select.poll()
        for fd in self.fds.values():
            poller.register(fd, select.POLLIN)
        alive = dict(self.fds)
        deadline = time.monotonic() + timeout
        while alive and (left := deadline - time.monotonic()) > 0:
            for fd, _events in poller.poll(left * 1000):
                poller.unregister(fd)
                alive = {pid: f for pid, f in alive.items() if f != fd}
        return sorted(alive)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
