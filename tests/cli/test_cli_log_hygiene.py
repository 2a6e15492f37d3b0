"""What nodes and clients log never carries a secret or a user's plaintext: a put, get, stat and
check through node processes logging at debug level in JSON, then every byte they logged is
searched for the read key (in every encoding the code uses), the read cap, the convergence
secret, the nodes' and the client's private keys, and the file's plaintext.  Real processes."""

from __future__ import annotations

import base64
import json
import os
import signal

import pytest
import trio
from test_cli_objects import DEADLINE, run, running_mesh

from p2pstore.cli.client_config import load_client_config
from p2pstore.cli.config_render import write_local_node_config
from p2pstore.cli.local_mesh import LOCAL_RULES, DevnetNode
from p2pstore.codec import ReadCap
from p2pstore.identity import NodeCredentials

pytestmark = pytest.mark.integration

MARKER = b"CONFIDENTIAL-PATIENT-RECORD-7731"


def forms(secret: bytes) -> list[bytes]:
    """The ways a secret could leak into a text log."""
    b32 = base64.b32encode(secret).decode().rstrip("=")
    return [
        secret,
        secret.hex().encode(),
        b32.encode(),
        b32.lower().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        repr(secret).encode(),
    ]


def private_key_bytes(credentials: NodeCredentials) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return credentials.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


async def test_no_secret_and_no_plaintext_reaches_any_log(tmp_path):
    plaintext = (MARKER + os.urandom(64)) * 3000
    source = tmp_path / "record.bin"
    source.write_bytes(plaintext)

    def debug_json_logs(members: list[DevnetNode]) -> None:
        for member in members:
            write_local_node_config(
                member.directory,
                listen=member.address,
                bootstrap_peers=() if member is members[0] else (members[0].address,),
                log_level="debug",
                log_format="json",
                rules=LOCAL_RULES,
            )

    client_output: list[bytes] = []
    with trio.fail_after(DEADLINE):
        async with running_mesh(tmp_path / "mesh", 9, debug_json_logs) as (
            members,
            processes,
            config,
        ):
            put = await run("--debug", "put", str(source), "--json", "--config", str(config))
            caps = json.loads(put.stdout)
            client_output.append(put.stderr)
            copy = tmp_path / "copy.bin"
            for args in (
                ("get", caps["read_cap"], "-o", str(copy)),
                ("stat", caps["verify_cap"]),
                ("check", caps["verify_cap"]),
            ):
                done = await run("--debug", *args, "--config", str(config))
                client_output += [done.stdout, done.stderr]
            assert copy.read_bytes() == plaintext  # the plaintext did travel, encrypted
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
            for process in processes.values():
                assert await process.wait() == 0

    read_cap = ReadCap.parse(caps["read_cap"])
    mesh = tmp_path / "mesh"
    secrets = [
        *forms(read_cap.key),
        caps["read_cap"].encode(),
        caps["read_cap"].split(":")[-1].encode(),
        MARKER,
        plaintext[:48],
    ]
    identities = [(m.directory / "node.key", m.directory / "node.crt") for m in members]
    identities.append((mesh / "client" / "client.key", mesh / "client" / "client.crt"))
    for key, certificate in identities:
        secrets += forms(private_key_bytes(NodeCredentials.load(key, certificate)))
    convergence = load_client_config(config).read_secret()
    assert convergence, "the local mesh's client has a convergence secret"
    secrets += forms(convergence)

    logs = {m.name: (m.directory / "node.log").read_bytes() for m in members}
    everything = b"".join(logs.values())
    assert everything.count(b'"event": "fragment_stored"') >= 8  # the data path did log
    assert everything.count(b'"level": "debug"') > 0
    for name, log in [*logs.items(), *(("client", out) for out in client_output)]:
        for secret in secrets:
            assert secret not in log, f"{name} logged a secret or plaintext ({secret[:12]!r}...)"
