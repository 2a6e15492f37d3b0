"""The daemon announces its node once after joining; the DHT's publisher keeps it fresh (there
was once a second loop here, sending every announcement twice)."""

from __future__ import annotations

from types import SimpleNamespace

import trio

from p2pstore.cli.node_commands import _join_and_announce


class FakeDht:
    def __init__(self) -> None:
        self.announced: list[int] = []
        self.sources: list[object] = []

    async def join(self, bootstrap, pinned, *, known) -> int:
        return 0

    async def announce(self, free_bytes) -> int:
        self.sources.append(free_bytes)
        self.announced.append(free_bytes() if callable(free_bytes) else free_bytes)
        return 3


class FakeMeshTrust:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def refresh(self) -> bool:
        self.calls.append("refresh")
        return False

    async def run(self) -> None:
        self.calls.append("run")


async def test_the_daemon_announces_once_and_leaves_the_rest_to_the_publisher(autojump_clock):
    dht = FakeDht()
    free = [1000]
    store = SimpleNamespace(usage=lambda: SimpleNamespace(free_bytes=free[0]))
    config = SimpleNamespace(join_through=lambda: [])
    trust = FakeMeshTrust()
    with trio.fail_after(24 * 3600):  # returns: no loop of its own (the trust's is faked)
        await _join_and_announce(config, dht, store, [], trust)  # type: ignore[arg-type]
    assert trust.calls == ["refresh", "run"]  # the CA's records fetched once joined
    assert dht.announced == [1000]
    (source,) = dht.sources
    free[0] = 10  # the publisher reads the free space of the moment at each republish
    assert callable(source) and source() == 10
