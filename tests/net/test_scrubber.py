"""The scrubber keeps its schedule however long its batches take (issue 14: a flooded node
takes longer over each batch, and that must not cost it passes)."""

from __future__ import annotations

import pytest
import trio

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.net.metrics import NodeMetrics
from p2pstore.net.scrubber import Scrubber, ScrubSettings
from p2pstore.store import MemoryFragmentStore, ScrubReport


class SlowScrubber(Scrubber):
    """Each batch takes ``cost`` seconds of (virtual) time, as on a busy node."""

    def __init__(self, cost: float, settings: ScrubSettings) -> None:
        store = MemoryFragmentStore(10**6)
        data = b"one fragment " * 100
        store.put(fragment_id(data), data)
        super().__init__(store, NodeMetrics(), settings, in_threads=False)
        self.cost = cost
        self.started: list[float] = []

    async def scrub_batch(self) -> ScrubReport:
        self.started.append(trio.current_time())
        await trio.sleep(self.cost)
        return await super().scrub_batch()


async def run_for(scrubber: Scrubber, seconds: float) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(scrubber.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("cost", [0.0, 1.5, 1.99])
async def test_batches_fall_every_interval_from_the_start_however_long_they_take(
    autojump_clock, cost
):
    scrubber = SlowScrubber(cost, ScrubSettings(batch_bytes=1 << 30, interval=2.0))
    began = trio.current_time()
    await run_for(scrubber, 20.5)
    assert [round(at - began, 6) for at in scrubber.started] == [2.0 * j for j in range(1, 11)]
    passes = scrubber.metrics.value("p2pstore_scrub_passes_total")
    assert passes == 10 if cost < 0.5 else passes == 9  # the last one still running at 20.5


async def test_a_batch_longer_than_the_interval_skips_the_ticks_it_missed(autojump_clock):
    scrubber = SlowScrubber(3.0, ScrubSettings(batch_bytes=1 << 30, interval=2.0))
    began = trio.current_time()
    await run_for(scrubber, 20.5)
    # 2 -> 5, then the next tick is 6 (4 was missed), 6 -> 9, 10 -> 13, ...; never two at once.
    assert [round(at - began, 6) for at in scrubber.started] == [2.0, 6.0, 10.0, 14.0, 18.0]
