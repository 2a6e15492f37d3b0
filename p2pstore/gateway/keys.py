"""The gateway's access keys: each bound to a tenant, optionally to some buckets and to reads.

SigV4 is an HMAC, so the gateway must know each secret: they live in a SQLite file on the
institution's side, created with mode 0600 (``p2pstore gateway key create|ls|rm``).  Removing a
key takes effect on the next request: the gateway reads the file for every signature check
(a primary-key lookup, tens of microseconds) instead of caching it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from p2pstore.errors import ConfigError

KEY_ID_BYTES = 12
SECRET_BYTES = 30
ENTROPY_BYTES = KEY_ID_BYTES + SECRET_BYTES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_keys (
    key_id TEXT PRIMARY KEY NOT NULL,
    secret TEXT NOT NULL,
    tenant TEXT NOT NULL,
    buckets TEXT,
    read_only INTEGER NOT NULL,
    created REAL NOT NULL
)
"""

READ_OPERATIONS = frozenset(
    {
        "ListBuckets", "HeadBucket", "ListObjects", "ListObjectsV2", "GetBucketLocation",
        "GetBucketVersioning", "ListObjectVersions", "ListMultipartUploads", "ListParts",
        "GetObjectLockConfiguration", "GetObject", "HeadObject", "GetObjectRetention",
        "GetObjectLegalHold",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AccessKey:
    key_id: str
    secret: str
    tenant: str
    buckets: tuple[str, ...] | None
    """The buckets it may touch; None for every bucket of its tenant."""
    read_only: bool
    created: float

    def permits(self, operation: str, bucket: str | None) -> bool:
        """Whether this key may run ``operation`` on ``bucket`` (None: the service)."""
        if self.read_only and operation not in READ_OPERATIONS:
            return False
        if bucket is None or self.buckets is None:
            return operation != "CreateBucket" or self.buckets is None
        return bucket in self.buckets


def new_key(
    entropy: bytes,
    *,
    tenant: str,
    buckets: Sequence[str] | None,
    read_only: bool,
    now: float,
) -> AccessKey:
    """A key from ``ENTROPY_BYTES`` of entropy: an id like AWS's (``P2P`` + 20 upper-case
    base32 characters) and a 40-character secret."""
    if len(entropy) != ENTROPY_BYTES:
        raise ValueError(f"a key needs {ENTROPY_BYTES} bytes of entropy")
    key_id = "P2P" + base64.b32encode(entropy[:KEY_ID_BYTES]).decode()[:17]
    secret = base64.b64encode(entropy[KEY_ID_BYTES:]).decode()
    if not tenant:
        raise ConfigError("a key needs a tenant")
    return AccessKey(key_id, secret, tenant, tuple(buckets) if buckets else None, read_only, now)


class AccessKeyStore:
    """The keys file.  Raises :class:`ConfigError` naming the file if it cannot be used."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            with self._translated("create"):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._translated("open"):
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute(_SCHEMA)

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"{self.path}: cannot {action} the access keys file: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def add(self, key: AccessKey) -> None:
        with self._translated("write"):
            self._db.execute(
                "INSERT INTO access_keys VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key.key_id,
                    key.secret,
                    key.tenant,
                    None if key.buckets is None else "\n".join(key.buckets),
                    int(key.read_only),
                    key.created,
                ),
            )

    def get(self, key_id: str) -> AccessKey | None:
        with self._translated("read"):
            row = self._db.execute(
                "SELECT * FROM access_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
        return None if row is None else _key(row)

    def secret_of(self, key_id: str) -> str | None:
        key = self.get(key_id)
        return None if key is None else key.secret

    def all(self) -> list[AccessKey]:
        with self._translated("read"):
            rows = self._db.execute("SELECT * FROM access_keys ORDER BY created, key_id")
            return [_key(row) for row in rows]

    def remove(self, key_id: str) -> bool:
        """Whether a key was removed."""
        with self._translated("write"):
            cursor = self._db.execute("DELETE FROM access_keys WHERE key_id = ?", (key_id,))
        return cursor.rowcount > 0


def _key(row: tuple[str, str, str, str | None, int, float]) -> AccessKey:
    key_id, secret, tenant, buckets, read_only, created = row
    return AccessKey(
        key_id,
        secret,
        tenant,
        None if buckets is None else tuple(buckets.split("\n")),
        bool(read_only),
        created,
    )
