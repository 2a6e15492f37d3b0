"""Serving the gateway's ASGI app over HTTP with hypercorn's trio worker.

The HTTP parsing, keep-alive and flow control are hypercorn's (h11 underneath): an incomplete
request head is capped, idle connections time out, and a request body is delivered to the app
in pieces with backpressure.  Cancelling :func:`serve` stops accepting and cancels requests in
flight; since a name is committed only after its body was stored and checked, as one signed
index entry naming the whole object, a stop never leaves a half-visible object.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from p2pstore.gateway.app import MAX_HEADER_BYTES, S3App

log = logging.getLogger(__name__)


def http_config(bind: str) -> Config:
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("p2pstore.gateway.http")
    config.h11_max_incomplete_size = MAX_HEADER_BYTES * 2
    config.include_server_header = False
    config.keep_alive_timeout = 75
    config.read_timeout = 120
    return config


async def serve(
    app: S3App, bind: str, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``app`` on ``bind`` (``host:port``; port 0 picks one) until cancelled; reports
    the URLs it listens on through ``task_status``."""
    await hypercorn_serve(app, http_config(bind), task_status=task_status)
