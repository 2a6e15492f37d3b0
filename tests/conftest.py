"""Fixtures shared by every layer's tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_internal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A node isolates a handler's bug to one session and logs it as an internal error; in tests
    such a bug must fail the test instead of hiding in a log."""
    caplog.set_level(logging.INFO, logger="p2pstore")
    yield
    bugs = [r for r in caplog.records if getattr(r, "event", None) == "internal_error"]
    assert not bugs, "internal errors were logged:\n" + "\n".join(
        f"{r.getMessage()}\n{r.exc_text or ''}" for r in bugs
    )


class LogEvents(logging.Handler):
    """Wakes tests up when a log record with given fields is emitted: logs as events, so tests
    wait on what the code reports instead of polling with sleeps."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._waiters: list[tuple[dict[str, object], object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        for fields, event in list(self._waiters):
            if self._matches(record, fields):
                event.set()  # type: ignore[attr-defined]

    @staticmethod
    def _matches(record: logging.LogRecord, fields: dict[str, object]) -> bool:
        return all(getattr(record, key, None) == value for key, value in fields.items())

    def matching(self, **fields: object) -> list[logging.LogRecord]:
        return [r for r in self.records if self._matches(r, fields)]

    async def wait_for(self, **fields: object) -> logging.LogRecord:
        """The first record (already seen or future) whose attributes equal ``fields``."""
        return (await self.wait_for_count(1, **fields))[0]

    async def wait_for_count(self, count: int, **fields: object) -> list[logging.LogRecord]:
        """The records (already seen or future) whose attributes equal ``fields``, once there
        are ``count`` of them."""
        import trio

        while True:
            found = self.matching(**fields)
            if len(found) >= count:
                return found
            event = trio.Event()
            entry = (fields, event)
            self._waiters.append(entry)
            try:
                await event.wait()
            finally:
                self._waiters.remove(entry)


@pytest.fixture
def log_events() -> Iterator[LogEvents]:
    handler = LogEvents()
    logger = logging.getLogger("p2pstore")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)
