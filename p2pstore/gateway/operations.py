"""Every operation the gateway serves, by S3's name; anything else is ``NotImplemented``."""

from __future__ import annotations

from p2pstore.gateway.app import Handler
from p2pstore.gateway.bucket_ops import HANDLERS as BUCKET_HANDLERS
from p2pstore.gateway.lock_ops import HANDLERS as LOCK_HANDLERS
from p2pstore.gateway.multipart_ops import HANDLERS as MULTIPART_HANDLERS
from p2pstore.gateway.object_ops import HANDLERS as OBJECT_HANDLERS

HANDLERS: dict[str, Handler] = {
    **BUCKET_HANDLERS,
    **OBJECT_HANDLERS,
    **LOCK_HANDLERS,
    **MULTIPART_HANDLERS,
}
