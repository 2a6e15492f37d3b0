"""Token buckets: never more than burst + rate x elapsed is served, a refusal's wait is exact,
a refusal changes nothing, debt is paid back before anything more is served, and the keyed
limiter stays bounded without ever making a peer wait longer."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.core.ratelimit import RateLimiter, TokenBucket

rates = st.floats(0.1, 1000.0)
bursts = st.floats(1.0, 10_000.0)
steps = st.lists(
    st.tuples(st.floats(0.0, 50.0), st.floats(0.0, 1.0)),  # (seconds later, cost / burst)
    max_size=60,
)


@given(rates, bursts, steps)
def test_never_serves_more_than_burst_plus_refill(rate, burst, requests):
    bucket = TokenBucket(rate, burst, now=0.0)
    now = served = 0.0
    for later, share in requests:
        now += later
        cost = share * burst
        if bucket.take(cost, now) == 0.0:
            served += cost
        assert served <= burst + rate * now + 1e-6 * (burst + rate * now)


@given(rates, bursts, st.floats(0.0, 2.0), st.floats(0.0, 100.0), st.floats(0.0, 10.0))
def test_a_refusal_says_exactly_when_the_request_will_be_served(
    rate, burst, share, drained, waited
):
    bucket = TokenBucket(rate, burst, now=0.0)
    bucket.charge(drained * rate, now=0.0)
    now = waited
    level = bucket.level(now)
    cost = share * burst
    wait = bucket.take(cost, now)
    if wait == 0.0:
        assert bucket.level(now) == pytest.approx(level - cost, abs=1e-9 * burst)
        return
    assert bucket.level(now) == level  # a refusal took nothing
    assert bucket.take(cost, now + wait * 0.999) > 0.0  # not before
    assert bucket.take(cost, now + wait) == 0.0  # but then


@given(rates, bursts, st.floats(1.0, 5.0))
def test_a_cost_above_the_burst_is_served_when_full_and_leaves_debt(rate, burst, times):
    bucket = TokenBucket(rate, burst, now=0.0)
    assert bucket.take(times * burst, now=0.0) == 0.0
    debt_paid_at = (times * burst) / rate  # from burst - cost back to burst
    wait = bucket.take(burst / 100, now=0.0)
    assert wait == pytest.approx(((times - 1) * burst + burst / 100) / rate, rel=1e-6)
    assert bucket.level(debt_paid_at) == pytest.approx(burst, rel=1e-9)


@given(rates, bursts, st.floats(0.0, 3.0))
def test_charged_debt_is_paid_back_before_anything_is_served(rate, burst, debt_share):
    bucket = TokenBucket(rate, burst, now=0.0)
    bucket.charge(burst + debt_share * burst, now=0.0)  # used after the fact, past empty
    small = burst / 1000
    wait = bucket.take(small, now=0.0)
    assert wait == pytest.approx((debt_share * burst + small) / rate, rel=1e-9)


def test_a_clock_stepping_back_refills_nothing():
    bucket = TokenBucket(1.0, 10.0, now=100.0)
    assert bucket.take(10.0, now=100.0) == 0.0
    assert bucket.take(1.0, now=50.0) == pytest.approx(1.0)
    assert bucket.take(1.0, now=101.0) == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0), (-1, 1), (math.inf, 1), (1, math.nan)])
def test_bad_parameters_are_refused(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, now=0.0)


requests_by_key = st.lists(st.tuples(st.integers(0, 12), st.floats(0.0, 5.0), st.floats(0.0, 12.0)))


@given(requests_by_key)
def test_the_limiter_is_one_bucket_per_key_while_it_has_room(requests):
    limiter = RateLimiter(2.0, 10.0, max_keys=13)
    oracle: dict[int, TokenBucket] = {}
    now = 0.0
    for key, later, cost in requests:
        now += later
        expected = oracle.setdefault(key, TokenBucket(2.0, 10.0, now)).take(cost, now)
        assert limiter.take(key, cost, now) == expected


@given(st.integers(1, 8), requests_by_key)
def test_the_limiter_stays_bounded_and_a_forgotten_key_starts_full(max_keys, requests):
    limiter = RateLimiter(2.0, 10.0, max_keys=max_keys)
    now = 0.0
    for key, later, cost in requests:
        now += later
        before = limiter.level(key, now)
        wait = limiter.take(key, cost, now)
        assert len(limiter) <= max_keys
        assert before <= 10.0  # forgetting never gives more than a full bucket
        if wait > 0.0:
            assert limiter.level(key, now) == pytest.approx(before)


def test_keys_are_limited_independently():
    limiter = RateLimiter(1.0, 3.0)
    assert [limiter.take(b"greedy", 1.0, 0.0) for _ in range(4)][-1] == pytest.approx(1.0)
    assert limiter.take(b"honest", 1.0, 0.0) == 0.0


def test_full_buckets_are_forgotten_before_busy_ones():
    limiter = RateLimiter(1.0, 5.0, max_keys=2)
    limiter.take(b"busy", 5.0, now=0.0)
    limiter.take(b"idle", 0.0, now=0.0)
    limiter.take(b"new", 1.0, now=0.0)  # no room: the idle (full) bucket goes
    assert limiter.level(b"busy", 0.0) == pytest.approx(0.0)
    assert len(limiter) == 2
