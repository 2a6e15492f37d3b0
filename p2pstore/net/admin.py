"""The node's admin endpoint: ``/metrics`` for Prometheus, ``/health`` and ``/status`` in JSON.

Strategy: a few read-only pages on their own loopback address, served by a trio task in the node's
nursery (no hidden thread, as ``prometheus_client.start_http_server`` would start).  Every
connection is bounded in time and size: the request head must arrive within ``read_timeout`` and
fit in :data:`~p2pstore.net.http.MAX_HEAD_BYTES`, the response must be taken within
``write_timeout``, at most ``max_connections`` are served at once, and the connection closes after
one response.  Whatever a client sends ends only its own connection; a bug in a page is logged as
an internal error and answered with 500, never allowed to take the node down.

Pages read the node's state on the trio thread (the node's tables are not thread-safe); the one
blocking call, the store's ``usage()``, only takes the store's bookkeeping lock.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from p2pstore import __version__
from p2pstore.errors import P2PStoreError, PeerUnreachable, RemoteProtocolError
from p2pstore.net.address import format_address
from p2pstore.net.dht import Dht
from p2pstore.net.http import (
    HEAD_END,
    MAX_HEAD_BYTES,
    Request,
    Response,
    head_complete,
    parse_request,
    text_response,
)
from p2pstore.net.metrics import CONTENT_TYPE
from p2pstore.net.node import Node
from p2pstore.store import FragmentStore

log = logging.getLogger("p2pstore.admin")

Page = Callable[[], Response]
"""Builds one page from the node's current state (on the trio thread, so it must be quick)."""

_ACCEPT_PRESSURE = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF = 0.1


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """Bounds of the admin endpoint; a scrape takes milliseconds, so these are generous."""

    read_timeout: float = 5.0
    write_timeout: float = 10.0
    max_connections: int = 16


class AdminServer:
    """Serves ``pages`` (path -> page) over HTTP on ``host:port``.

    Start with ``await nursery.start(server.run)``; stops when cancelled.
    """

    def __init__(
        self,
        pages: Mapping[str, Page],
        host: str,
        port: int,
        settings: AdminSettings | None = None,
    ) -> None:
        self.pages = dict(pages)
        self.settings = settings or AdminSettings()
        self._host = host
        self._port = port
        self._slots = trio.Semaphore(self.settings.max_connections)

    @property
    def listen_address(self) -> str:
        """Where the endpoint listens (the bound port once :meth:`run` started)."""
        return format_address(self._host, self._port)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled.

        Raises :class:`PeerUnreachable` naming the address if it cannot listen there.
        """
        try:
            listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        except OSError as exc:
            raise PeerUnreachable(
                f"cannot listen for the admin endpoint on {self.listen_address}: "
                f"{exc.strerror or exc}; change [metrics] listen"
            ) from exc
        self._port = int(listeners[0].socket.getsockname()[1])
        log.info(
            "admin endpoint on http://%s (/metrics, /health, /status)",
            self.listen_address,
            extra={"event": "admin_listening", "address": self.listen_address},
        )
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                await self._slots.acquire()
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    self._slots.release()
                    if exc.errno not in _ACCEPT_PRESSURE:
                        raise
                    log.warning(
                        "admin endpoint cannot accept connections: %s",
                        exc,
                        extra={"event": "admin_accept_failed"},
                    )
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                nursery.start_soon(self._serve_slot, stream)

    async def _serve_slot(self, stream: trio.SocketStream) -> None:
        try:
            await self.serve_connection(stream)
        finally:
            self._slots.release()

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """Read one request from ``stream``, answer it, and close the stream.  Never raises
        for what the client does (garbage, silence, disconnecting half-way)."""
        try:
            response, head_only = await self._answer(stream)
            if response is not None:
                with trio.move_on_after(self.settings.write_timeout):
                    await stream.send_all(response.encode(head_only=head_only))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing is owed to it
        finally:
            await trio.aclose_forcefully(stream)

    async def _answer(self, stream: trio.abc.Stream) -> tuple[Response | None, bool]:
        """The response to the request on ``stream`` (None: the client left before asking),
        and whether to send its head only."""
        head = await self._read_head(stream)
        if not isinstance(head, bytes):
            return head, False
        try:
            request = parse_request(head)
        except RemoteProtocolError as exc:
            return _refused(400, str(exc)), False
        return self._route(request), request.method == "HEAD"

    async def _read_head(self, stream: trio.abc.Stream) -> bytes | Response | None:
        """The request head, a refusal (too slow, too large), or None if the client left."""
        buffer = b""
        with trio.move_on_after(self.settings.read_timeout) as scope:
            while not head_complete(buffer) and len(buffer) <= MAX_HEAD_BYTES:
                data = await stream.receive_some(MAX_HEAD_BYTES + 1 - len(buffer))
                if not data:
                    return None
                buffer += data
        if scope.cancelled_caught:
            return _refused(408, "the request did not arrive in time")
        end = buffer.find(HEAD_END)
        if end < 0 or end + len(HEAD_END) > MAX_HEAD_BYTES:
            return _refused(431, f"the request head is over {MAX_HEAD_BYTES} bytes")
        return buffer

    def _route(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"only GET and HEAD\n", headers=(("Allow", "GET, HEAD"),))
        page = self.pages.get(request.path)
        if page is None:
            known = ", ".join(sorted(self.pages))
            return text_response(404, f"no page {request.path}; try {known}")
        return self._render(page, request.path)

    @staticmethod
    def _render(page: Page, path: str) -> Response:
        try:
            return page()
        except P2PStoreError as exc:  # e.g. the store is closing: say so, keep serving
            return text_response(503, f"{path} is unavailable: {exc}")
        except Exception:
            # The boundary between a page and the node: a bug in one must not stop the other.
            log.exception("internal error rendering %s", path, extra={"event": "internal_error"})
            return text_response(500, f"internal error rendering {path}; see the node's log")


def _refused(status: int, reason: str) -> Response:
    log.debug("admin endpoint refused a request: %s", reason, extra={"event": "admin_refused"})
    return text_response(status, reason)


# -- the node's pages ------------------------------------------------------------------------


def node_pages(
    node: Node,
    dht: Dht | None,
    store: FragmentStore | None,
    audits: Callable[[], Mapping[str, object]] | None = None,
) -> dict[str, Page]:
    """``/metrics``, ``/health`` and ``/status`` of a running node; ``audits()``: what its
    steward's audits found (``Auditor.status``), shown in ``/status``."""

    def metrics() -> Response:
        return Response(200, node.metrics.exposition(), content_type=CONTENT_TYPE)

    def health() -> Response:
        healthy, document = health_document(node, dht, store)
        return _json(200 if healthy else 503, document)

    def status() -> Response:
        return _json(200, status_document(node, dht, store, audits))

    return {"/metrics": metrics, "/health": health, "/status": status}


def health_document(
    node: Node, dht: Dht | None, store: FragmentStore | None
) -> tuple[bool, dict[str, object]]:
    """(healthy, what /health shows): healthy when joined and the store accepts writes.

    A store that refuses writes (a read-only or full disk, a full quota) still serves reads;
    ``write_refusal`` says why it refuses, ``store_writable`` is False, and the node is not
    healthy, so an operator's probe sees it.
    """
    joined = dht is not None and dht.joined
    usage = store.usage() if store is not None else None
    refusal = usage.write_refusal if usage is not None else None
    reasons = []
    if not joined:
        reasons.append("not joined to the mesh yet (see the join_failed events in the log)")
    if usage is None:
        reasons.append("no fragment store")
    elif refusal is not None:
        reasons.append(f"the store refuses writes (reads are still served): {refusal}")
    document: dict[str, object] = {
        "joined": joined,
        "store_writable": usage is not None and refusal is None,
        "write_refusal": refusal,
        "peers_connected": len(node.peers()),
        "contacts": len(dht.table) if dht is not None else 0,
        "quota_used": round(usage.quota_fraction, 4) if usage is not None else None,
        "reason": "; ".join(reasons) or None,
    }
    return not reasons, document


def status_document(
    node: Node,
    dht: Dht | None,
    store: FragmentStore | None,
    audits: Callable[[], Mapping[str, object]] | None = None,
) -> dict[str, object]:
    """What /status shows: who the node is, whom it sees, what it holds, and (``audits``)
    which holders its steward caught failing audits."""
    identity = node.identity
    now = trio.current_time()
    usage = store.usage() if store is not None else None
    return {
        "audits": None if audits is None else audits(),
        "certificate": {
            "serial": str(identity.serial),
            "not_after": identity.not_after.isoformat(),
            "expires_in_days": round((identity.not_after.timestamp() - time.time()) / 86400, 2),
        },
        "node_id": identity.node_id.hex(),
        "datacenter": identity.datacenter,
        "region": identity.region,
        "address": node.address,
        "version": __version__,
        "joined": dht is not None and dht.joined,
        "sessions": node.session_counts(),
        "peers": [
            {
                "node_id": view.identity.node_id.hex(),
                "role": view.identity.role.value,
                "datacenter": view.identity.datacenter,
                "region": view.identity.region,
                "address": view.address,
                "outbound": view.outbound,
                "connected_seconds": round(now - view.connected_since, 1),
                "wire_version": view.version,
            }
            for view in node.peers()
        ],
        "routing_table": {"contacts": len(dht.table) if dht is not None else 0},
        "store": None
        if usage is None
        else {
            "fragments": usage.fragments,
            "bytes_used": usage.bytes_used,
            "quota_bytes": usage.quota_bytes,
            "free_bytes": usage.free_bytes,
            "writable": usage.writable,
            "reason": usage.reason,
            "quota_full": usage.quota_full,
            "write_refusal": usage.write_refusal,
            "corrupt_found": usage.corrupt_found,
        },
        "records": {
            "held": len(dht.store) if dht is not None else 0,
            "bytes_held": dht.store.bytes_held if dht is not None else 0,
            "published": len(dht.published) if dht is not None else 0,
        },
    }


def _json(status: int, document: Mapping[str, object]) -> Response:
    body = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    return Response(status, body, content_type="application/json")
