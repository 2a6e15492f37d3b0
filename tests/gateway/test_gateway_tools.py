"""aws-cli and rclone, the tools institutions already script, each run a session against the
gateway (over in-memory blobs: the mesh path is the boto3 tests').  aws-cli comes with the dev
extra (it is on PyPI); rclone is not on PyPI, so its test runs where the Debian package is
installed and otherwise skips, saying so."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio
from gateway_harness import Gateway, running_gateway

from p2pstore.gateway.blobs import MemoryBlobs

MiB = 1024 * 1024


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def make_files(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"hello\n",
        "docs/report one.pdf": os.urandom(300_000),
        "docs/deep/x+y=z.bin": os.urandom(1000),
        "big.bin": os.urandom(20 * MiB + 5),  # multipart for both tools
        "empty": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


async def tool(command: list[str], env: dict[str, str]) -> str:
    done = await trio.run_process(
        command, capture_stdout=True, capture_stderr=True, check=False, env={**os.environ, **env}
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return output


def aws_env(gw: Gateway, home: Path) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": gw.admin.key_id,
        "AWS_SECRET_ACCESS_KEY": gw.admin.secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
        "HOME": str(home),
    }


@pytest.mark.integration
@pytest.mark.skipif(
    shutil.which("aws") is None,
    reason="aws-cli is not installed (pip install -e '.[dev]' brings it)",
)
async def test_aws_cli_session(tmp_path: Path) -> None:
    source, back = tmp_path / "src", tmp_path / "back"
    source.mkdir()
    files = make_files(source)
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        env = aws_env(gw, tmp_path)

        def aws(*args: str) -> list[str]:
            return ["aws", "--endpoint-url", gw.url, *args]

        with trio.fail_after(120):
            await tool(aws("s3", "mb", "s3://tools"), env)
            await tool(aws("s3", "cp", str(source / "big.bin"), "s3://tools/single/big.bin"), env)
            await tool(aws("s3", "sync", str(source), "s3://tools/tree"), env)
            listed = await tool(aws("s3", "ls", "--recursive", "s3://tools/tree/"), env)
            for name in files:
                assert f"tree/{name}" in listed
            await tool(aws("s3", "sync", "s3://tools/tree", str(back)), env)
            assert tree(back) == files
            await tool(aws("s3", "cp", "s3://tools/single/big.bin", str(tmp_path / "one")), env)
            assert (tmp_path / "one").read_bytes() == files["big.bin"]
            head = await tool(
                aws("s3api", "head-object", "--bucket", "tools", "--key", "tree/a.txt"), env
            )
            assert '"ContentLength": 6' in head
            await tool(aws("s3", "rm", "--recursive", "s3://tools/"), env)
            assert "tree/" not in await tool(aws("s3", "ls", "--recursive", "s3://tools/"), env)
            await tool(aws("s3", "rb", "s3://tools"), env)


@pytest.mark.integration
@pytest.mark.skipif(
    shutil.which("rclone") is None,
    reason="rclone is not installed: it is not on PyPI, so the dev extra cannot bring it "
    "(apt-get install rclone to run this session)",
)
async def test_rclone_sync_both_ways_then_check(tmp_path: Path) -> None:
    source, back = tmp_path / "src", tmp_path / "back"
    source.mkdir()
    files = make_files(source)
    async with running_gateway(tmp_path, MemoryBlobs()) as gw:
        env = {
            "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
            "RCLONE_CONFIG_GW_TYPE": "s3",
            "RCLONE_CONFIG_GW_PROVIDER": "Other",
            "RCLONE_CONFIG_GW_ACCESS_KEY_ID": gw.admin.key_id,
            "RCLONE_CONFIG_GW_SECRET_ACCESS_KEY": gw.admin.secret,
            "RCLONE_CONFIG_GW_ENDPOINT": gw.url,
            "RCLONE_CONFIG_GW_REGION": "us-east-1",
            "RCLONE_CONFIG_GW_FORCE_PATH_STYLE": "true",
            "AWS_CA_BUNDLE": "",  # an inherited bundle makes aws-sdk-go fail on plain HTTP
        }
        with trio.fail_after(120):
            await tool(["rclone", "mkdir", "gw:rclone"], env)
            await tool(["rclone", "sync", str(source), "gw:rclone/tree"], env)
            await tool(["rclone", "check", str(source), "gw:rclone/tree"], env)
            await tool(["rclone", "sync", "gw:rclone/tree", str(back)], env)
            assert tree(back) == files
            (source / "a.txt").write_bytes(b"changed\n")
            (source / "docs" / "report one.pdf").unlink()
            await tool(["rclone", "sync", str(source), "gw:rclone/tree"], env)
            await tool(["rclone", "check", str(source), "gw:rclone/tree"], env)
            listed = await tool(["rclone", "lsf", "-R", "gw:rclone/tree"], env)
            assert "docs/report one.pdf" not in listed and "a.txt" in listed
