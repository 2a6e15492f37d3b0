"""The TLS link's send path in virtual time: small frames handed over during a write leave
together in the next one, each whole; a caller cancelled while waiting sends nothing; a failed
write fails every frame it carried."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from p2pstore.errors import PeerUnreachable
from p2pstore.net.tls_link import SMALL_FRAME, TlsLink
from p2pstore.testing.net_harness import NetHarness
from p2pstore.wire import FrameDecoder, frame_header

MiB = 1024 * 1024


@pytest.fixture
def ids(tmp_path: Path) -> NetHarness:
    return NetHarness("memory", tmp_path)


class GatedStream(trio.abc.Stream):
    """Records each write; a write waits for ``gate`` while it is closed (a slow peer)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.gate = trio.Event()
        self.gate.set()
        self.fail = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.gate.wait()
        if self.fail:
            raise trio.BrokenResourceError("reset by peer")
        self.writes.append(bytes(data))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()
        raise AssertionError

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def frames_in(writes: list[bytes]) -> list[bytes]:
    decoder = FrameDecoder(2 * MiB)
    decoder.feed(b"".join(writes))
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    assert decoder.at_frame_boundary()
    return frames


def make_link(ids: NetHarness, stream: GatedStream) -> TlsLink:
    peer = ids.credentials().identity
    return TlsLink(stream, peer, "remote:1", outbound=False, max_frame=2 * MiB)


async def test_frames_handed_over_during_a_write_leave_together(ids, autojump_clock):
    stream = GatedStream()
    link = make_link(ids, stream)
    stream.gate = trio.Event()  # the first write stalls
    sent: list[int] = []

    async def send(index: int, size: int) -> None:
        await link.send_frame(bytes([index]) * size)
        sent.append(index)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, 0, 10)
        await trio.testing.wait_all_tasks_blocked()
        for index in range(1, 20):
            nursery.start_soon(send, index, 10 if index != 7 else SMALL_FRAME + 1)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [] and stream.writes == []
        stream.gate.set()
    assert sorted(sent) == list(range(20))
    # The stalled write, then the 18 small frames in one write, then the large one (header,
    # payload): 4 writes for 20 frames, each frame whole.
    assert len(stream.writes) == 4
    assert len(stream.writes[1]) == 18 * (len(frame_header(10)) + 10)
    frames = frames_in(stream.writes)
    assert sorted(f[0] for f in frames) == list(range(20))
    assert all(len(f) == (SMALL_FRAME + 1 if f[0] == 7 else 10) for f in frames)


async def test_a_caller_cancelled_while_waiting_sends_nothing(ids, autojump_clock):
    stream = GatedStream()
    link = make_link(ids, stream)
    stream.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.send_frame, b"first")
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1) as scope:
            await link.send_frame(b"given up")
        assert scope.cancelled_caught
        nursery.start_soon(link.send_frame, b"third")
        await trio.testing.wait_all_tasks_blocked()
        stream.gate.set()
    assert frames_in(stream.writes) == [b"first", b"third"]


async def test_a_failed_write_fails_every_frame_it_carried(ids, autojump_clock):
    stream = GatedStream()
    link = make_link(ids, stream)
    stream.gate = trio.Event()
    outcomes: list[str] = []

    async def send(payload: bytes) -> None:
        try:
            await link.send_frame(payload)
            outcomes.append("sent")
        except PeerUnreachable as exc:
            outcomes.append(str(exc))

    async with trio.open_nursery() as nursery:
        for index in range(5):
            nursery.start_soon(send, bytes([index]))
            await trio.testing.wait_all_tasks_blocked()
        stream.fail = True
        stream.gate.set()
    assert len(outcomes) == 5
    assert all("broke while sending: reset by peer" in o for o in outcomes)
    with pytest.raises(PeerUnreachable, match="broke while sending"):
        await link.send_frame(b"later")
