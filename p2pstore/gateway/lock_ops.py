"""Object Lock: a bucket's default retention, a version's retention date and legal hold.

Only compliance mode exists here: a retention date can be extended, never shortened, whatever
key signs the request (governance mode's bypass would let a stolen credential undo it).  The
mesh enforces it: retention dates and legal holds are entries of the bucket index that the
replicas join so a date only grows and a hold stays, and an erasure waits for them
(:mod:`p2pstore.gateway.mesh_backend`); the gateway's refusals only give the client S3's error.
"""

from __future__ import annotations

from datetime import datetime

from p2pstore.gateway.app import Call, Handler, Response
from p2pstore.gateway.backend import ObjectInfo
from p2pstore.gateway.s3errors import S3Error
from p2pstore.gateway.s3xml import MAX_XML_BYTES, Tree, iso8601, parse, render

DAY = 86_400.0
MODES = ("COMPLIANCE", "GOVERNANCE")


def parse_date(text: str) -> float:
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise S3Error("InvalidArgument", f"{text!r} is not an ISO 8601 date") from None


def _mode(text: str | None) -> None:
    if text not in MODES:
        raise S3Error("MalformedXML", "the retention mode must be COMPLIANCE")
    if text == "GOVERNANCE":
        raise S3Error(
            "NotImplemented", "governance mode (retention a key may bypass) is not offered"
        )


def lock_headers(info: ObjectInfo) -> list[tuple[str, str]]:
    headers = []
    if info.retain_until is not None:
        headers += [
            ("x-amz-object-lock-mode", "COMPLIANCE"),
            ("x-amz-object-lock-retain-until-date", iso8601(info.retain_until)),
        ]
    if info.legal_hold:
        headers.append(("x-amz-object-lock-legal-hold", "ON"))
    return headers


async def put_object_lock_configuration(call: Call) -> Response:
    root = parse(await call.body.read_all(MAX_XML_BYTES), "ObjectLockConfiguration")
    if (root.findtext("ObjectLockEnabled") or "").strip() != "Enabled":
        raise S3Error("MalformedXML", "<ObjectLockEnabled> must be Enabled")
    retention = None
    default = root.find("Rule/DefaultRetention")
    if default is not None:
        _mode(default.findtext("Mode"))
        days, years = default.findtext("Days"), default.findtext("Years")
        if (days is None) == (years is None):
            raise S3Error("MalformedXML", "a default retention gives Days or Years")
        count = (days or years or "").strip()
        if not count.isdigit() or int(count) < 1:
            raise S3Error("InvalidArgument", "the default retention must be a positive number")
        retention = int(count) * DAY * (1 if days is not None else 365)
    await call.backend.set_object_lock(call.tenant, call.bucket, retention)
    return Response()


async def get_object_lock_configuration(call: Call) -> Response:
    bucket = await call.backend.bucket(call.tenant, call.bucket)
    if not bucket.object_lock:
        raise S3Error("ObjectLockConfigurationNotFoundError", "Object Lock is not enabled")
    tree: list[Tree] = [("ObjectLockEnabled", "Enabled")]
    if bucket.default_retention is not None:
        rule: Tree = ("DefaultRetention", [
            ("Mode", "COMPLIANCE"), ("Days", int(bucket.default_retention // DAY)),
        ])  # fmt: skip
        tree.append(("Rule", [rule]))
    return Response(body=render("ObjectLockConfiguration", tree))


async def put_object_retention(call: Call) -> Response:
    root = parse(await call.body.read_all(MAX_XML_BYTES), "Retention")
    _mode(root.findtext("Mode"))
    until = parse_date(root.findtext("RetainUntilDate") or "")
    info = await call.backend.retain(
        call.tenant, call.bucket, call.object_key, call.param("versionId"), until=until
    )
    return Response(headers=[("x-amz-version-id", info.version_id)])


async def get_object_retention(call: Call) -> Response:
    info = await call.backend.head(
        call.tenant, call.bucket, call.object_key, call.param("versionId")
    )
    if info.retain_until is None:
        raise S3Error("NoSuchObjectLockConfiguration", "the version has no retention date")
    tree: list[Tree] = [("Mode", "COMPLIANCE"), ("RetainUntilDate", iso8601(info.retain_until))]
    return Response(body=render("Retention", tree))


async def put_object_legal_hold(call: Call) -> Response:
    root = parse(await call.body.read_all(MAX_XML_BYTES), "LegalHold")
    status = (root.findtext("Status") or "").strip()
    if status not in ("ON", "OFF"):
        raise S3Error("MalformedXML", "<Status> must be ON or OFF")
    await call.backend.retain(
        call.tenant,
        call.bucket,
        call.object_key,
        call.param("versionId"),
        legal_hold=status == "ON",
    )
    return Response()


async def get_object_legal_hold(call: Call) -> Response:
    info = await call.backend.head(
        call.tenant, call.bucket, call.object_key, call.param("versionId")
    )
    return Response(body=render("LegalHold", [("Status", "ON" if info.legal_hold else "OFF")]))


HANDLERS: dict[str, Handler] = {
    "PutObjectLockConfiguration": put_object_lock_configuration,
    "GetObjectLockConfiguration": get_object_lock_configuration,
    "PutObjectRetention": put_object_retention,
    "GetObjectRetention": get_object_retention,
    "PutObjectLegalHold": put_object_legal_hold,
    "GetObjectLegalHold": get_object_legal_hold,
}
