"""A lifeline from a local mesh to its node processes: the nodes stop when the mesh process dies,
however it dies.

Strategy: the parent opens a pipe, keeps the write end (never written, close-on-exec, so no other
child inherits it) and gives each node the read end (``node run --parent-fd N``).  The kernel
closes the write end when the parent exits for any reason, SIGKILL included, and the node reads
end-of-file: it stops as on SIGTERM (accepted writes answered, state saved).

Why not ``prctl(PR_SET_PDEATHSIG)``: it fires when the *thread* that forked the child exits, and
trio forks from a worker thread of its cache (``trio.run_process``), which exits after idling, so
nodes would be killed at random while their parent lives; it is Linux-only; and a parent dead
before the child called ``prctl`` is missed unless it re-checks ``getppid()``.  The pipe has none
of these: an end-of-file cannot be missed, even one that happened before the node looked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

import trio

log = logging.getLogger("p2pstore.node")


class Lifeline:
    """The parent's side: ``child_fd`` goes to every node (``pass_fds``); the write end lives as
    long as this process does."""

    def __init__(self) -> None:
        self.child_fd, self._write_fd = os.pipe()  # both close-on-exec (PEP 446)

    def node_arguments(self) -> list[str]:
        """What to add to ``p2pstore node run``'s command line."""
        return ["--parent-fd", str(self.child_fd)]

    def close(self) -> None:
        """Let the nodes go (they see end-of-file), e.g. once every node was stopped."""
        for fd in (self.child_fd, self._write_fd):
            with contextlib.suppress(OSError):  # already closed: not an error here
                os.close(fd)


async def watch_parent(fd: int) -> None:
    """Return once the parent is gone (end-of-file on ``fd``); the node then stops as on SIGTERM,
    through the same signal path, so it stops the same way whoever asked."""
    os.set_blocking(fd, False)
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not data:
            break
    os.close(fd)
    log.warning(
        "the local mesh that started this node is gone: stopping",
        extra={"event": "parent_exited"},
    )
    signal.raise_signal(signal.SIGTERM)
