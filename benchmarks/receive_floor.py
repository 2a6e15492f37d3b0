"""What a node must spend per MiB of fragment it receives, measured on this machine.

Why: a node's CPU per MiB means something only beside the work it cannot skip.  For each
fragment that work is: decrypting it out of the TLS 1.3 records its sender made (the mesh's own
contexts and certificates, so the same cipher suite), computing its id (the Merkle root the store
checks it against), and the store's durable write (``DataDirectory.write_atomic``: a file
written and fsynced, renamed, its directory fsynced).  All three run here in one thread over
fragments of random bytes, and only this thread's CPU time is counted (``time.thread_time``),
as /proc counts a node process's.  Not counted: making the records (the sender's work), the
kernel's copy of the bytes into the socket, msgpack, the index, the scheduler -- what the node
spends beyond the floor.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import time
from pathlib import Path

from p2pstore.codec.fragment_ids import fragment_id
from p2pstore.identity import NodeCredentials
from p2pstore.net.tls import make_ssl_contexts
from p2pstore.store.directory import DataDirectory

MiB = 1024 * 1024


def _memory_tls_pair(
    sender: NodeCredentials, receiver: NodeCredentials, ca_certificate: Path
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.SSLObject, ssl.MemoryBIO]:
    """(sending object, its outgoing BIO, receiving object, its incoming BIO), handshaken."""
    _, client_context = make_ssl_contexts(sender, str(ca_certificate))
    server_context, _ = make_ssl_contexts(receiver, str(ca_certificate))
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_context.wrap_bio(bios[0], bios[1], server_side=False)
    server = server_context.wrap_bio(bios[2], bios[3], server_side=True)
    sides = ((client, bios[1], bios[2]), (server, bios[3], bios[0]))
    for _ in range(8):
        for tls, outgoing, their_incoming in sides:
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.do_handshake()
            their_incoming.write(outgoing.read())
    client.write(b"ready")  # the server's handshake ends with the client's Finished
    bios[2].write(bios[1].read())
    if server.read(5) != b"ready":
        raise RuntimeError("the in-memory TLS handshake did not complete")
    return client, bios[1], server, bios[2]


def receive_floor_ms(
    sender: NodeCredentials,
    receiver: NodeCredentials,
    ca_certificate: Path,
    *,
    fragment_size: int = MiB,
    fragments: int = 32,
) -> dict[str, float]:
    """CPU ms per MiB of fragment for each part of the work and in all (``total``)."""
    client, records_out, server, records_in = _memory_tls_pair(sender, receiver, ca_certificate)
    spent = {"decrypt": 0.0, "id": 0.0, "write": 0.0}
    with tempfile.TemporaryDirectory(prefix="p2pstore-floor-") as tmp:
        directory = DataDirectory(Path(tmp) / "store")
        try:
            directory.make_layout()
            for _ in range(fragments):
                plaintext = os.urandom(fragment_size)
                client.write(plaintext)
                records = records_out.read()
                start = time.thread_time()
                records_in.write(records)
                received = bytearray(fragment_size)
                with memoryview(received) as view:
                    filled = 0
                    while filled < fragment_size:
                        with view[filled:] as rest:
                            filled += server.read(fragment_size - filled, rest)  # type: ignore[operator]
                decrypted = time.thread_time()
                fid = fragment_id(received)
                hashed = time.thread_time()
                directory.write_atomic(fid, bytes(received))
                written = time.thread_time()
                spent["decrypt"] += decrypted - start
                spent["id"] += hashed - decrypted
                spent["write"] += written - hashed
                if bytes(received) != plaintext:
                    raise RuntimeError("TLS gave back other bytes than were sent")
        finally:
            directory.close()
    mib = fragments * fragment_size / MiB
    floor = {part: seconds * 1000 / mib for part, seconds in spent.items()}
    floor["total"] = sum(floor.values())
    return floor
