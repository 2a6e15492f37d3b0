"""Object Lock through boto3: an attacker holding the tenant's own key overwrites and deletes
every object and tries to shorten retention; every original version still reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from gateway_harness import running_gateway

from p2pstore.gateway.blobs import MemoryBlobs


def code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


async def test_compliance_retention_refuses_early_deletes(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        s3 = gw.s3
        await s3.create_bucket(Bucket="vault", ObjectLockEnabledForBucket=True)
        await s3.put_object_lock_configuration(
            Bucket="vault",
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}},
            },
        )
        lock = await s3.get_object_lock_configuration(Bucket="vault")
        assert lock["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Days"] == 30
        originals = {f"doc-{i}": f"original {i}".encode() for i in range(3)}
        versions = {}
        for key, data in originals.items():
            versions[key] = (await s3.put_object(Bucket="vault", Key=key, Body=data))["VersionId"]
        head = await s3.head_object(Bucket="vault", Key="doc-0")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=29)

        # The attacker, with the tenant's key: overwrite, delete, delete versions, shorten.
        for key in originals:
            await s3.put_object(Bucket="vault", Key=key, Body=b"encrypted by ransomware")
            await s3.delete_object(Bucket="vault", Key=key)
            with pytest.raises(ClientError) as caught:
                await s3.delete_object(Bucket="vault", Key=key, VersionId=versions[key])
            assert code(caught.value) == "AccessDenied"
            with pytest.raises(ClientError) as caught:
                await s3.put_object_retention(
                    Bucket="vault",
                    Key=key,
                    VersionId=versions[key],
                    Retention={
                        "Mode": "COMPLIANCE",
                        "RetainUntilDate": datetime.now(UTC) + timedelta(days=1),
                    },
                )
            assert code(caught.value) == "AccessDenied"
        with pytest.raises(ClientError) as caught:
            await s3.put_bucket_versioning(
                Bucket="vault", VersioningConfiguration={"Status": "Suspended"}
            )
        assert code(caught.value) == "InvalidBucketState"
        deleted = await s3.delete_objects(
            Bucket="vault",
            Delete={"Objects": [{"Key": k, "VersionId": v} for k, v in versions.items()]},
        )
        assert {e["Code"] for e in deleted["Errors"]} == {"AccessDenied"}

        for key, data in originals.items():
            body, _ = await s3.get_bytes(Bucket="vault", Key=key, VersionId=versions[key])
            assert body == data

        # Extending is allowed, and a legal hold keeps a version whatever its date.
        later = datetime.now(UTC) + timedelta(days=90)
        await s3.put_object_retention(
            Bucket="vault",
            Key="doc-0",
            VersionId=versions["doc-0"],
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later},
        )
        kept = await s3.get_object_retention(
            Bucket="vault", Key="doc-0", VersionId=versions["doc-0"]
        )
        assert kept["Retention"]["RetainUntilDate"] > datetime.now(UTC) + timedelta(days=89)
        await s3.put_object_legal_hold(
            Bucket="vault", Key="doc-1", VersionId=versions["doc-1"], LegalHold={"Status": "ON"}
        )
        hold = await s3.get_object_legal_hold(
            Bucket="vault", Key="doc-1", VersionId=versions["doc-1"]
        )
        assert hold["LegalHold"]["Status"] == "ON"
        gw.app.backend.clock = lambda: datetime.now(UTC).timestamp() + 31 * 86400  # type: ignore[attr-defined]
        await s3.delete_object(Bucket="vault", Key="doc-2", VersionId=versions["doc-2"])
        with pytest.raises(ClientError) as caught:
            await s3.delete_object(Bucket="vault", Key="doc-1", VersionId=versions["doc-1"])
        assert code(caught.value) == "AccessDenied"
        with pytest.raises(ClientError) as caught:
            await s3.put_object_retention(
                Bucket="vault",
                Key="doc-0",
                VersionId=versions["doc-0"],
                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later},
            )
        assert code(caught.value) == "NotImplemented"
