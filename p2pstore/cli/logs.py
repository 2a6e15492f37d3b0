"""Log lines an operator can grep or ship: one line per event, text or JSON.

Code logs with ``extra={"event": ..., ...}``; the JSON format puts those fields beside the
message so a log pipeline can filter on ``event`` without parsing prose.  Keys and plaintext are
never passed to the logger.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines that end with ``[event=...]`` when the record names its event, so
    a text log can be grepped for events just like a JSON one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        event = getattr(record, "event", None)
        return f"{line} [event={event}]" if event else line


def configure_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send p2pstore's logs to ``stream`` (stderr by default) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger("p2pstore")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
