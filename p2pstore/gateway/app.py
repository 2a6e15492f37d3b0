"""The gateway as an ASGI application: authenticate, route, run one handler, answer S3's way.

Strategy: one request, one pass: the route and the signature are checked before a byte of the
body is read; the handler (from the ``{operation: handler}`` tables of :mod:`bucket_ops` and
:mod:`object_ops`) answers a :class:`Response` whose body is bytes or a streaming writer.  Every
refusal is an :class:`S3Error` rendered as S3's ``<Error>`` document with its status; an error
below (the mesh) is a 503 the client retries, logged once.  If a streamed answer fails after its
headers went out, the connection is dropped: the client sees a short body, never a wrong one.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from p2pstore.errors import P2PStoreError
from p2pstore.gateway.backend import Backend, Write
from p2pstore.gateway.body import RequestBody
from p2pstore.gateway.keys import AccessKey
from p2pstore.gateway.metrics import GatewayMetrics
from p2pstore.gateway.routing import Route, route
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.s3xml import error_document
from p2pstore.gateway.sigv4 import SignedRequest, authenticate, parse_query

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
"""Headers larger than this are refused (the HTTP server also caps an incomplete request)."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    region: str = "us-east-1"
    domains: tuple[str, ...] = ()
    """Host names under which ``BUCKET.DOMAIN`` addresses a bucket (virtual-host style)."""


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: Callable[[Write], Awaitable[None]] | None = None
    """Writes the body when set (``Content-Length`` is then in ``headers``, unless ``late``)."""
    late: bool = False
    """The status and headers go with the stream's first write, so it may still set them;
    with no ``Content-Length`` the body is sent chunked."""


@dataclass
class Call:
    """One authenticated request, as a handler sees it."""

    route: Route
    request: SignedRequest
    key: AccessKey
    body: RequestBody
    backend: Backend
    settings: GatewaySettings
    request_id: str = ""

    @property
    def tenant(self) -> str:
        return self.key.tenant

    @property
    def bucket(self) -> str:
        assert self.route.bucket is not None
        return self.route.bucket

    @property
    def object_key(self) -> str:
        assert self.route.key is not None
        return self.route.key

    def param(self, name: str) -> str | None:
        return self.request.param(name)

    def header(self, name: str) -> str | None:
        return self.request.header(name)


Handler = Callable[[Call], Awaitable[Response]]


def leaf_error(error: BaseException) -> BaseException:
    """The first non-group exception of a (nested) group, as trio's nurseries raise them."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class S3App:
    """The ASGI app.  ``key_of`` finds an access key by id (None: unknown); ``clock`` gives
    seconds since the epoch for signature times."""

    def __init__(
        self,
        backend: Backend,
        *,
        key_of: Callable[[str], AccessKey | None],
        handlers: Mapping[str, Handler],
        settings: GatewaySettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.key_of = key_of
        self.handlers = handlers
        self.settings = settings or GatewaySettings()
        self.clock = clock
        self.metrics = GatewayMetrics()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Any, receive: Any, send: Any) -> None:
        started = trio.current_time()
        request_id = secrets.token_hex(8).upper()
        operation = "Unknown"
        try:
            request = _signed_request(scope)
            found = self._route(request)
            operation = found.operation
            call = self._authorise(request, found, receive)
            call.request_id = request_id
            handler = self.handlers.get(operation)
            if handler is None:
                raise S3Error("NotImplemented", f"{operation} is not implemented by this gateway")
            response = await handler(call)
            self.metrics.bytes_in.inc(call.body.received)
        except (P2PStoreError, BaseExceptionGroup) as error:
            leaf = leaf_error(error)
            if not isinstance(leaf, P2PStoreError):
                raise
            if not isinstance(leaf, S3Error):
                log.warning(
                    "%s failed below the gateway: %s",
                    operation,
                    leaf,
                    extra={"event": "gateway_backend_error", "operation": operation},
                )
                leaf = S3Error("ServiceUnavailable", f"the mesh could not serve this: {leaf}")
            response = _error_response(leaf, request_id)
        response.headers.append(("x-amz-request-id", request_id))
        self.metrics.answered(operation, response.status)  # counted as it is answered
        await self._send(send, response)
        self.metrics.latency.labels(operation=operation).observe(trio.current_time() - started)

    def _route(self, request: SignedRequest) -> Route:
        size = sum(len(k) + len(v) for k, v in request.headers)
        if size > MAX_HEADER_BYTES:
            raise S3Error("RequestHeaderSectionTooLarge", "the request's headers are too large")
        return route(
            request.method,
            request.header("host") or "",
            request.path,
            request.query,
            domains=self.settings.domains,
            has_copy_source=request.header("x-amz-copy-source") is not None,
        )

    def _authorise(self, request: SignedRequest, found: Route, receive: Any) -> Call:
        auth = authenticate(
            request,
            now=self.clock(),
            region=self.settings.region,
            secret_of=lambda key_id: getattr(self.key_of(key_id), "secret", None),
        )
        key = self.key_of(auth.access_key)
        if key is None:  # removed between the two lookups
            raise S3Error("InvalidAccessKeyId", "the access key was removed")
        if not key.permits(found.operation, found.bucket):
            raise S3Error("AccessDenied", f"this key may not {found.operation} here")
        body = RequestBody(receive, request, auth)
        return Call(found, request, key, body, self.backend, self.settings)

    async def _send(self, send: Any, response: Response) -> None:
        started = False

        async def start() -> None:
            nonlocal started
            started = True
            headers = [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers
            ]
            if response.stream is None:
                headers.append((b"content-length", str(len(response.body)).encode()))
            if response.body and not any(k == b"content-type" for k, _ in headers):
                headers.append((b"content-type", b"application/xml"))
            status = response.status
            await send({"type": "http.response.start", "status": status, "headers": headers})

        if not response.late:
            await start()
        if response.stream is None:
            await send({"type": "http.response.body", "body": response.body})
            self.metrics.bytes_out.inc(len(response.body))
            return

        async def write(data: bytes) -> None:
            if not started:
                await start()
            await send({"type": "http.response.body", "body": data, "more_body": True})
            self.metrics.bytes_out.inc(len(data))

        await response.stream(write)  # an error here drops the connection: a short body
        if not started:
            await start()
        await send({"type": "http.response.body", "body": b""})


def _signed_request(scope: Any) -> SignedRequest:
    headers = tuple(
        (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
        for name, value in scope["headers"]
    )
    return SignedRequest(
        method=scope["method"],
        path=scope["path"],
        query=parse_query(bytes(scope["query_string"]).decode("latin-1")),
        headers=headers,
    )


def _error_response(error: S3Error, request_id: str) -> Response:
    return Response(error.status, [], error_document(error, request_id))


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
