"""``p2pstore gateway key create|ls|rm`` and the gateway's configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from p2pstore.cli.client_config import write_client_config
from p2pstore.cli.gateway_commands import load_gateway_config
from p2pstore.cli.main import cli
from p2pstore.errors import ConfigError
from p2pstore.gateway.keys import AccessKeyStore


def gateway_config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "client").mkdir()
    client = write_client_config(
        tmp_path / "client",
        key="k.key",
        certificate="k.crt",
        ca_certificate="ca.crt",
        revocation_list=None,
        bootstrap_peers=("127.0.0.1:7000",),
    )
    for name in ("k.key", "k.crt", "ca.crt"):
        (tmp_path / "client" / name).write_text("")
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nlisten = "127.0.0.1:9000"\nclient = "{client}"\n{extra}')
    return config


def test_key_create_ls_rm(tmp_path: Path) -> None:
    config = gateway_config(tmp_path)
    runner = CliRunner()
    made = runner.invoke(
        cli, ["gateway", "--config", str(config), "key", "create", "--tenant", "uni", "--json"]
    )
    assert made.exit_code == 0, made.output
    first = json.loads(made.output)
    narrow = runner.invoke(
        cli,
        ["gateway", "--config", str(config), "key", "create", "--tenant", "uni",
         "--bucket", "photos", "--bucket", "scans", "--read-only"],
    )  # fmt: skip
    assert narrow.exit_code == 0 and "secret access key:" in narrow.output
    listed = json.loads(
        runner.invoke(cli, ["gateway", "--config", str(config), "key", "ls", "--json"]).output
    )
    assert listed[0]["access_key_id"] == first["access_key_id"]
    assert listed[1]["buckets"] == ["photos", "scans"] and listed[1]["read_only"]
    assert "secret" not in json.dumps(listed)
    keys_file = tmp_path / "gateway-keys.sqlite"
    assert keys_file.stat().st_mode & 0o777 == 0o600
    store = AccessKeyStore(keys_file)
    assert store.secret_of(first["access_key_id"]) == first["secret_access_key"]
    store.close()
    removed = runner.invoke(
        cli, ["gateway", "--config", str(config), "key", "rm", first["access_key_id"]]
    )
    assert removed.exit_code == 0
    again = runner.invoke(
        cli, ["gateway", "--config", str(config), "key", "rm", first["access_key_id"]]
    )
    assert again.exit_code == 2 and "no access key" in again.output


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, 'domains = "s3.example.org"\n')
    with pytest.raises(ConfigError, match=r"\[gateway\] domains"):
        load_gateway_config(config)
    config.write_text('[gateway]\nlisten = "127.0.0.1:9000"\nclinet = "x"\n')
    with pytest.raises(ConfigError, match="did you mean 'client'"):
        load_gateway_config(config)
    config.write_text(
        f'[gateway]\nlisten = "127.0.0.1:9000"\nclient = "{tmp_path}/client/client.toml"\n'
        'rule = "nope"\ndomains = ["s3.example.org"]\n'
    )
    with pytest.raises(ConfigError, match=r"\[gateway\] rule"):
        load_gateway_config(config)
    config.write_text(
        f'[gateway]\nlisten = "127.0.0.1:9000"\nclient = "{tmp_path}/client/client.toml"\n'
        'domains = ["s3.example.org"]\n'
    )
    loaded = load_gateway_config(config)
    assert loaded.domains == ("s3.example.org",) and loaded.region == "us-east-1"
    assert loaded.uploads == tmp_path / "gateway-uploads.sqlite"
    assert loaded.spool == tmp_path / "gateway-spool"
    assert loaded.spool_limit == 16 * 2**30


def test_spool_settings(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, 'spool = "/var/spool/s3"\nspool_limit = "2 GiB"\n')
    loaded = load_gateway_config(config)
    assert loaded.spool == Path("/var/spool/s3") and loaded.spool_limit == 2 * 2**30
    for bad in ('"lots"', "1.5", "-1"):
        text = config.read_text().replace('spool_limit = "2 GiB"', f"spool_limit = {bad}")
        config.write_text(text)
        with pytest.raises(ConfigError, match=r"\[gateway\] spool_limit"):
            load_gateway_config(config)
        config.write_text(text.replace(f"spool_limit = {bad}", 'spool_limit = "2 GiB"'))
