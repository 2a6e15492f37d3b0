"""A gateway served on loopback for boto3 to drive, over any backend."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import trio
from botocore.config import Config
from local_backend import LocalBackend

from p2pstore.gateway.app import GatewaySettings, S3App
from p2pstore.gateway.backend import BlobStore
from p2pstore.gateway.keys import ENTROPY_BYTES, AccessKey, AccessKeyStore, new_key
from p2pstore.gateway.operations import HANDLERS
from p2pstore.gateway.server import serve


class S3:
    """A boto3 client whose calls run in a worker thread: ``await s3.put_object(...)``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def get_bytes(self, **kwargs: Any) -> tuple[bytes, dict[str, Any]]:
        """A GetObject whose body is read in the worker thread too: (body, response)."""

        def get() -> tuple[bytes, dict[str, Any]]:
            response = self.client.get_object(**kwargs)
            return response["Body"].read(), response

        return await trio.to_thread.run_sync(get)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        async def call(**kwargs: Any) -> Any:
            return await trio.to_thread.run_sync(functools.partial(method, **kwargs))

        return call


def boto_client(url: str, key: AccessKey, **config: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=key.key_id,
        aws_secret_access_key=key.secret,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            **config,
        ),
    )


@dataclass
class Gateway:
    url: str
    app: S3App
    keys: AccessKeyStore
    admin: AccessKey
    s3: S3

    def key(self, **kwargs: Any) -> AccessKey:
        key = new_key(os.urandom(ENTROPY_BYTES), now=time.time(), **kwargs)
        self.keys.add(key)
        return key

    def client(self, key: AccessKey, **config: Any) -> S3:
        return S3(boto_client(self.url, key, **config))


@asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    blobs: BlobStore,
    *,
    settings: GatewaySettings | None = None,
    backend: Any = None,
) -> AsyncIterator[Gateway]:
    """A gateway over ``backend`` (default: names in SQLite, bytes in ``blobs``)."""
    keys = AccessKeyStore(tmp_path / "keys.sqlite")
    backend = backend or LocalBackend(tmp_path / "names.sqlite", blobs, clock=time.time)
    app = S3App(
        backend,
        key_of=keys.get,
        handlers=HANDLERS,
        settings=settings,
    )
    admin = new_key(
        os.urandom(ENTROPY_BYTES), tenant="uni", buckets=None, read_only=False, now=time.time()
    )
    keys.add(admin)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve, app, "127.0.0.1:0")
        yield Gateway(urls[0], app, keys, admin, S3(boto_client(urls[0], admin)))
        nursery.cancel_scope.cancel()
    backend.close()
    keys.close()
