"""S3's errors: a code, an HTTP status and a message, as every S3 client expects them.

Strategy: the gateway raises :class:`S3Error` wherever a request cannot be served; the app turns
it into S3's ``<Error>`` XML at one place.  The code decides the status (the table below), so a
handler names what went wrong, never a number.
"""

from __future__ import annotations

from p2pstore.errors import P2PStoreError

STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidBucketState": 409,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "MalformedXML": 400,
    "MetadataTooLarge": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchObjectLockConfiguration": 404,
    "ObjectLockConfigurationNotFoundError": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestHeaderSectionTooLarge": 400,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(P2PStoreError):
    """A request the gateway refuses or could not serve; ``code`` is S3's error code."""

    def __init__(self, code: str, message: str, *, resource: str = "") -> None:
        if code not in STATUS:
            raise ValueError(f"unknown S3 error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.resource = resource

    @property
    def status(self) -> int:
        return STATUS[self.code]
