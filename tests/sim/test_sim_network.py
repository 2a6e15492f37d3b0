"""The transfer model: per-link calendars in which a booking for the future never delays a
transfer that fits before it (that a repair then takes the time the scenario's rates give it
is checked in test_sim_theory.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.sim.network import Calendar, Network
from p2pstore.sim.scenario import NetworkSpec

DAY = 86400.0


def network(peers: int = 3, now: list[float] | None = None) -> Network:
    clock = now if now is not None else [0.0]
    spec = NetworkSpec(latency_datacenter=0.0, latency_region=0.0, latency_wan=0.0)
    net = Network(spec, lambda: clock[0])
    for _ in range(peers):
        net.add_peer(0, 0)
    return net


def test_a_booking_for_later_leaves_the_time_before_it_free():
    # the case: a steward books its upload for when decoding ends, a day ahead;
    # a fetch to it and an upload from it asked for now run now
    net = network()
    size = 125_000_000  # one second at 125 MB/s
    assert net.transfer(0, 1, size, DAY) == DAY + 1
    assert net.transfer(2, 0, size, 0.0) == 1.0  # the steward's downlink is free
    assert net.transfer(0, 2, size, 0.0) == 1.0  # and so is its uplink until the day is up
    # a transfer that does not fit before the booking waits for the end of it
    assert net.transfer(0, 2, int(DAY * 125e6), 10.0) == DAY + 1 + DAY
    # one link carries one transfer at a time: the second waits for the first
    assert net.transfer(1, 2, size, 5.0) == 6.0
    assert net.transfer(1, 0, size, 5.0) == 7.0


def test_a_put_upload_books_the_uplink_only():
    net = network()
    assert net.transfer_out(0, 125_000_000, 0.0) == 1.0
    assert net.transfer_out(0, 125_000_000, 0.0) == 2.0
    assert net.transfer(1, 0, 125_000_000, 0.0) == 1.0  # peer 0's downlink is free


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.floats(0.001, 20)),
        min_size=1,
        max_size=30,
    )
)
def test_calendar_bookings_never_overlap_and_take_the_first_gap(requests):
    calendar = Calendar()
    booked: list[tuple[float, float]] = []
    for at, duration in requests:
        begin = calendar.first_free(at, duration)
        assert begin >= at
        # free for the whole duration, and no earlier start would be
        assert all(end <= begin or begin + duration <= start for start, end in booked)
        earlier = [end for start, end in booked if at <= end < begin] + [at]
        for candidate in earlier:
            if candidate < begin:
                assert any(
                    start < candidate + duration and candidate < end for start, end in booked
                ), (candidate, begin, booked)
        calendar.book(begin, begin + duration, 0.0)
        booked.append((begin, begin + duration))
        starts, ends = calendar.starts, calendar.ends
        assert all(s < e for s, e in zip(starts, ends, strict=True))
        assert all(e < s for e, s in zip(ends, starts[1:], strict=False))  # merged, sorted


def test_the_calendar_forgets_what_ended():
    calendar = Calendar()
    for i in range(10):
        calendar.book(2 * i, 2 * i + 1, 0.0)
    assert len(calendar) == 10
    calendar.book(30, 31, now=15.5)
    assert calendar.starts == [16, 18, 30]
