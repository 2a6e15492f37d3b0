"""TLS over a trio socket stream that decrypts every whole record a socket read brought.

Why not ``trio.SSLStream``: its ``receive_some`` hands back one TLS record (16 KiB) per call,
each a trip through its general retry loop and the scheduler, so a 1 MiB fragment cost 64 of
them -- a node receiving fragments spent more CPU there than on decrypting, hashing and writing
them (benchmarks/README.md, issue 19).  This stream reads the socket in large pieces and
decrypts every complete record of them into one buffer, so a call returns up to ``max_bytes``.

Strategy: one ``ssl.SSLObject`` over two memory BIOs.  SSL calls never await, so no task sees
the object half-way through one.  Whoever wrote to the SSL object drains the outgoing BIO under
a strict FIFO lock and sends what it read, so records reach the socket in the order the object
made them (a read can make some too: a TLS 1.3 key update answer).  The protocol is TLS 1.3
with no session tickets or renegotiation (``make_ssl_contexts``), which is all the mesh speaks.
One task receives at a time (the link's receive loop); any number may send.  What the caller
sees is ``trio.SSLStream``'s contract: SSL failures and an end of stream without TLS's
close_notify raise ``trio.BrokenResourceError`` (its cause is the ``ssl`` error), a clean close
returns ``b""``, and a use after ``aclose`` raises ``trio.ClosedResourceError``.
:func:`handshake_failure` names what a failed handshake's ``ssl`` error means for an operator.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import NoReturn, cast

import trio

from p2pstore.errors import PeerRefused, PeerUnreachable

TRANSPORT_RECEIVE = 256 * 1024
"""Bytes asked of the socket per read."""

SEND_PIECE = 1024 * 1024
"""Plaintext encrypted per socket write, so a 16 MiB frame is not held twice over at once."""

RECORD = 16 * 1024 + 256
"""Room for the plaintext of one TLS record (the least a read buffer is given)."""


class TlsStream(trio.abc.Stream):
    """A TLS connection over ``transport``; call :meth:`do_handshake` before anything else."""

    def __init__(
        self, transport: trio.SocketStream, context: ssl.SSLContext, *, server_side: bool
    ) -> None:
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self._send_lock = trio.StrictFIFOLock()
        self._broken: BaseException | None = None
        """The SSL or transport failure that broke the stream (raised again by every call)."""
        self._deferred: ssl.SSLError | None = None
        """A failure met after some plaintext was decrypted: raised by the next receive."""
        self._closed = False
        self._eof = False
        self._transport_eof = False

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.transport.socket

    def peer_certificate(self) -> bytes | None:
        """The DER certificate the peer presented in the handshake, if any."""
        return self._ssl.getpeercert(binary_form=True)

    async def do_handshake(self) -> None:
        """Run the TLS handshake.  A cancelled handshake leaves the stream broken."""
        self._check_usable()
        try:
            while True:
                try:
                    self._ssl.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                except ssl.SSLError as exc:
                    self._break(exc)
                await self._flush()
                if done:
                    return
                await self._fill()
        except BaseException as exc:
            self._broken = self._broken or exc
            raise

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data``; a cancelled or failed send leaves the stream broken."""
        self._check_usable()
        if not data:
            await trio.lowlevel.checkpoint()
            return
        with memoryview(data) as view:
            for start in range(0, len(view), SEND_PIECE):
                with view[start : start + SEND_PIECE] as piece:
                    try:
                        self._ssl.write(piece)
                    except ssl.SSLError as exc:
                        self._break(exc)
                await self._flush()

    async def wait_send_all_might_not_block(self) -> None:
        self._check_usable()
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Up to ``max_bytes`` (default 256 KiB) of plaintext: every whole record received so
        far, reading the socket only when none is.  ``b""`` once the peer closed cleanly."""
        self._check_usable()
        size = TRANSPORT_RECEIVE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        while True:
            if self._deferred is not None:
                self._break(self._deferred)
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            data = self._decrypt(size)
            if data is not None:
                await self._flush()  # what the read made (a key update answer), if anything
                await trio.lowlevel.checkpoint()
                return data
            await self._fill()

    async def aclose(self) -> None:
        """Say close_notify (if the stream is healthy and the peer reads) and close the socket.

        Callers bound it: it waits for the send lock and for the socket to take the alert."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        healthy = self._broken is None
        self._closed = True
        try:
            if healthy:
                # Want-read (the peer's close_notify is not awaited) or already failed.
                with contextlib.suppress(ssl.SSLError):
                    self._ssl.unwrap()
                async with self._send_lock:
                    if closing := self._outgoing.read():
                        await self.transport.send_all(closing)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went first: the socket is closed below either way
        finally:
            await self.transport.aclose()

    # -- inside -------------------------------------------------------------------------------

    def _decrypt(self, size: int) -> bytes | bytearray | None:
        """Decrypt whole records into one buffer of at most ``size`` bytes; None if there is
        no whole record yet.  Sets ``_eof`` at the peer's close_notify."""
        # Plaintext is never longer than the ciphertext holding it (plus one record already
        # decrypted inside OpenSSL), so the buffer need not be larger.
        room = min(size, max(RECORD, self._incoming.pending + self._ssl.pending()))
        buffer = bytearray(room)
        filled = 0
        with memoryview(buffer) as view:
            while filled < room:
                try:
                    with view[filled:] as rest:
                        # Into a buffer, read returns a count (typeshed says bytes).
                        got = cast(int, self._ssl.read(room - filled, rest))
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLError as exc:
                    if not filled:
                        self._break(exc)
                    self._deferred = exc
                    break
                if not got:
                    self._eof = True
                    break
                filled += got
        if not filled:
            return b"" if self._eof else None
        del buffer[filled:]
        return buffer

    async def _fill(self) -> None:
        """Read the socket once into the incoming BIO (its end into the BIO's EOF)."""
        if self._transport_eof:  # OpenSSL wants more after the end: cannot happen, but never spin
            self._break(ssl.SSLEOFError("the connection ended inside a TLS record"))
        try:
            data = await self.transport.receive_some(TRANSPORT_RECEIVE)
        except trio.BrokenResourceError as exc:
            self._broken = exc
            raise
        if data:
            self._incoming.write(data)
        else:
            self._transport_eof = True
            self._incoming.write_eof()

    async def _flush(self) -> None:
        """Send what the SSL object has written so far (FIFO: records stay in order)."""
        if not self._outgoing.pending:
            return
        async with self._send_lock:
            to_send = self._outgoing.read()
            if not to_send:
                return
            try:
                await self.transport.send_all(to_send)
            except BaseException as exc:
                # Some of the record may be on the wire: nothing can follow it any more.
                self._broken = self._broken or exc
                raise

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("the TLS stream is broken") from self._broken

    def _break(self, exc: BaseException) -> NoReturn:
        self._broken = exc
        raise trio.BrokenResourceError(str(exc)) from exc


_VERIFY_REASONS = {
    # OpenSSL X509_V_ERR_* codes -> the reasons TrustAnchor gives for the same faults.
    2: "wrong-ca",  # unable to get issuer certificate
    7: "wrong-ca",  # certificate signature failure
    9: "not-yet-valid",
    10: "expired",
    18: "wrong-ca",  # self-signed certificate
    19: "wrong-ca",  # self-signed certificate in chain
    20: "wrong-ca",  # unable to get local issuer certificate
    21: "wrong-ca",  # unable to verify the first certificate
    23: "revoked",
    26: "not-a-node",  # unsupported certificate purpose: a client certificate serving
}


def handshake_failure(remote: str, exc: trio.BrokenResourceError) -> PeerRefused | PeerUnreachable:
    """Turn a failed handshake into a refusal that says why, or a plain network failure."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = _VERIFY_REASONS.get(cause.verify_code, "bad-certificate")
        return PeerRefused(
            f"TLS handshake with {remote} failed: its certificate was refused "
            f"({cause.verify_message}, reason {reason})",
            reason=reason,
        )
    if isinstance(cause, ssl.SSLError):
        text = str(cause)
        if "WRONG_VERSION_NUMBER" in text or "HTTP_REQUEST" in text or "UNEXPECTED_RECORD" in text:
            return PeerRefused(
                f"{remote} does not speak TLS (plain TCP?): {text}", reason="not-tls"
            )
        if "CERTIFICATE_REQUIRED" in text or "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text:
            return PeerRefused(
                f"{remote} presented no certificate: {text}", reason="no-certificate"
            )
        if "ALERT" in text:
            return PeerRefused(
                f"{remote} refused our certificate during the TLS handshake: {text}",
                reason="rejected-by-peer",
            )
        return PeerRefused(f"TLS handshake with {remote} failed: {text}", reason="tls-error")
    return PeerUnreachable(f"connection to {remote} broke during the TLS handshake: {exc}")
