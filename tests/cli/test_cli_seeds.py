"""The seed-list format: what a mesh publishes so that new nodes can join it."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pstore.cli.seeds import Seed, load_seed_file
from p2pstore.errors import ConfigError

BOOTSTRAP = Path(__file__).resolve().parents[2] / "bootstrap"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seeds.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_seed_file_loads():
    seeds = load_seed_file(BOOTSTRAP / "seeds.toml")
    assert seeds[0].address == "node1.strasbourg.example.org:7400"
    assert seeds[0].node_id == bytes.fromhex("3f2a9c0d5e4b1a6f8c7d2e9b0a1c3d5e7f9b2c4d")
    assert seeds[1] == Seed("[2001:db8::12]:7400", None)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[seed]]\nnode_id = "' + "ab" * 20 + '"\n', "seed[0]: address is required"),
        ('[[seed]]\naddress = "nohost"\n', "seed[0]: bad address 'nohost'"),
        ('[[seed]]\naddress = "a:1"\n[[seed]]\naddress = "b:0"\n', "seed[1]: 'b:0': port 0"),
        ('[[seed]]\naddress = "a:1"\nnode_id = "xyz"\n', "seed[0]: node_id"),
        ('[[seed]]\naddress = "a:1"\nnodeid = "ab"\n', "seed[0]: unknown key 'nodeid'"),
        ('[[seeds]]\naddress = "a:1"\n', "unknown key 'seeds'"),
        ("[[seed]\n", "not valid TOML"),
    ],
)
def test_bad_seed_files_name_the_entry_and_the_key(tmp_path, text, named):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_seed_file(path)
    assert str(path) in str(error.value) and named in str(error.value)


def test_a_missing_seed_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such seed file"):
        load_seed_file(tmp_path / "absent.toml")
