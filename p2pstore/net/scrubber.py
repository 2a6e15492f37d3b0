"""Scrubbing: re-verify every stored fragment, slowly and forever, so bit rot is found early.

Why: a fragment is hashed when it is served, but one nobody asks for could rot unseen until the
day it is needed, and by then other copies may be gone too.  The store re-verifies a bounded
batch per call and never reads a clock (see :meth:`FragmentStore.scrub`); this driver decides
the pace: one batch of ``batch_bytes`` every ``interval`` seconds, in a worker thread so hashing
never stalls the node.  With the defaults that is about 0.5 MiB/s, a pass over 500 GiB in about
eleven days.  Corrupt fragments are already removed by the store; here they are counted and
logged, for the stewards' repair to replace.

Batches fall on a fixed schedule (a :class:`RoundClock` from the start), not an interval after
the previous one ended: a node busy answering a flood takes longer over each batch, and
sleeping after each would let every such delay push all later batches back (issue 14).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from p2pstore.core.steward_round import RoundClock
from p2pstore.errors import StoreError
from p2pstore.net.metrics import NodeMetrics
from p2pstore.store import FragmentStore, ScrubReport

log = logging.getLogger("p2pstore.store")


@dataclass(frozen=True, slots=True)
class ScrubSettings:
    """The pace of scrubbing."""

    batch_bytes: int = 16 * 2**20
    interval: float = 30.0

    def __post_init__(self) -> None:
        if self.batch_bytes < 1 or self.interval <= 0:
            raise ValueError(f"scrub batch_bytes must be >= 1 and interval > 0, got {self}")


class Scrubber:
    """Scrubs ``store`` at a steady pace.  Start with ``await nursery.start(scrubber.run)``."""

    def __init__(
        self,
        store: FragmentStore,
        metrics: NodeMetrics,
        settings: ScrubSettings | None = None,
        *,
        in_threads: bool = True,
    ) -> None:
        """``in_threads=False`` calls the store directly (the in-memory store under a
        ``MockClock``, where a worker thread would let virtual time run ahead)."""
        self.store = store
        self.metrics = metrics
        self.settings = settings or ScrubSettings()
        self._in_threads = in_threads
        self._cursor: bytes | None = None
        self._pass_checked = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Scrub one batch at each tick of ``interval`` from the start, until cancelled; a
        batch that outlasts the interval skips the ticks it missed.  A batch the disk cannot
        read is logged and retried at the next tick; the node keeps running."""
        clock = RoundClock(self.settings.interval, trio.current_time())
        task_status.started()
        while True:
            await trio.sleep_until(clock.after(trio.current_time()))
            try:
                await self.scrub_batch()
            except StoreError as exc:
                log.error(
                    "scrubbing failed, retrying in %gs: %s",
                    self.settings.interval,
                    exc,
                    extra={"event": "scrub_failed"},
                )

    async def scrub_batch(self) -> ScrubReport:
        """Verify the next batch; returns what it found.  Raises :class:`StoreError` if the
        disk cannot be read."""
        if self._in_threads:
            report = await trio.to_thread.run_sync(
                self.store.scrub, self.settings.batch_bytes, self._cursor
            )
        else:
            await trio.lowlevel.checkpoint()
            report = self.store.scrub(self.settings.batch_bytes, self._cursor)
        self._cursor = report.next_cursor
        self.metrics.observe_scrub(report)
        for fragment_id in report.corrupt_ids:
            log.warning(
                "scrubbing found fragment %s corrupt or missing and removed it",
                fragment_id.hex()[:16],
                extra={"event": "fragment_corrupt", "fragment": fragment_id.hex()},
            )
        self._pass_checked += report.checked
        if report.done and self._pass_checked:
            log.info(
                "finished a scrub pass: %d fragments verified",
                self._pass_checked,
                extra={"event": "scrub_pass_done", "fragments": self._pass_checked},
            )
            self._pass_checked = 0
        return report
