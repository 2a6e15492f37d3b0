"""A harness that gives the same tests a TLS network (real sockets, real time) or an in-memory
one (virtual time), so every transport capability is tested on both."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from p2pstore.testing.net_harness import NetHarness

__all__ = ["NetHarness"]


@pytest.fixture(params=["tls", "memory"])
def net(request: pytest.FixtureRequest, tmp_path: Path) -> NetHarness:
    return NetHarness(request.param, tmp_path)


@pytest.fixture
def clock(net: NetHarness) -> trio.testing.MockClock | None:
    """Virtual time for the memory network; real time for real sockets (never mixed)."""
    return trio.testing.MockClock(autojump_threshold=0) if net.kind == "memory" else None
