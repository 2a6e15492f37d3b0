"""bootstrap/: the example node.toml is a valid config that documents every key, and the operator's
README only shows commands and options that exist."""

from __future__ import annotations

import re
import shlex
import shutil
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest

from p2pstore.cli.config import _SCHEMA, load_node_config
from p2pstore.cli.main import cli
from p2pstore.identity import MeshCA

BOOTSTRAP = Path(__file__).resolve().parents[2] / "bootstrap"
EXAMPLE = BOOTSTRAP / "node.toml"
README = BOOTSTRAP / "README.md"


def every_key_set(text: str) -> str:
    """The example with its optional ``#key = ...`` lines uncommented."""
    return re.sub(r"(?m)^#(\w+ = )", r"\1", text)


def test_the_example_has_exactly_the_keys_of_the_schema():
    document = tomllib.loads(every_key_set(EXAMPLE.read_text(encoding="utf-8")))
    assert {section: set(table) for section, table in document.items()} == {
        section: set(keys) for section, keys in _SCHEMA.items()
    }


def test_only_optional_keys_are_left_commented_out():
    commented = re.findall(r"(?m)^#(\w+) = ", EXAMPLE.read_text(encoding="utf-8"))
    assert commented, "the example shows no optional key at its default"
    for key in commented:
        assert not any(keys.get(key) for keys in _SCHEMA.values()), f"{key} is required"


def test_every_key_of_the_example_is_explained_with_its_default():
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    explained = set()
    for number, line in enumerate(lines):
        match = re.match(r"#?(\w+) = ", line)
        if not match:
            continue
        comment = []
        for above in reversed(lines[:number]):
            if not above.startswith("#"):
                break
            comment.insert(0, above)
        text = " ".join(comment)
        assert len(comment) >= 2, f"{match.group(1)} has no explanation"
        required = _SCHEMA[current_section(lines, number)][match.group(1)]
        assert ("Required" in text) if required else ("Optional; default:" in text), text
        explained.add(match.group(1))
    assert explained == {key for keys in _SCHEMA.values() for key in keys}


def current_section(lines: list[str], number: int) -> str:
    for line in reversed(lines[:number]):
        if line.startswith("["):
            return line.strip("[]")
    raise AssertionError("key outside a section")


def test_the_example_loads_next_to_real_identity_files(tmp_path):
    now = datetime.now(UTC)
    authority = MeshCA.create(tmp_path / "mesh-ca", mesh_name="grand-est", now=now)
    authority.issue(tmp_path, "node", datacenter="dc-strasbourg-1", region="FR-GES", now=now)
    for name in ("ca.crt", "crl.pem"):
        shutil.copy(tmp_path / "mesh-ca" / name, tmp_path / name)
    # As shipped: it loads with nothing but the identity files beside it, and advertises
    # nothing made up (a placeholder address would be announced to the whole mesh).
    shutil.copy(EXAMPLE, tmp_path / "node.toml")
    shipped = load_node_config(tmp_path / "node.toml")
    assert (shipped.advertise, shipped.seeds) == (None, ())
    # Every optional key set, with the example seed list beside it.
    (tmp_path / "node.toml").write_text(every_key_set(EXAMPLE.read_text(encoding="utf-8")))
    shutil.copy(EXAMPLE.parent / "seeds.toml", tmp_path / "seeds.toml")
    config = load_node_config(tmp_path / "node.toml")
    assert config.key == tmp_path / "node.key"
    assert config.revocation_list == tmp_path / "crl.pem"
    assert config.data_dir == tmp_path / "data"
    assert config.listen == "0.0.0.0:7400"
    assert config.advertise is not None
    assert len(config.bootstrap_peers) >= 2
    assert [seed.address for seed in config.join_through()][-2:] == [
        seed.address for seed in config.seeds
    ]
    assert (config.log_level, config.log_format) == ("info", "text")  # the defaults, spelled out


def documented_commands() -> list[list[str]]:
    """Every ``p2pstore ...`` command line in the README's code blocks, as argv."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    commands = [
        shlex.split(line)[1:]
        for block in blocks
        for line in block.splitlines()
        if line.startswith("p2pstore ")
    ]
    assert len(commands) >= 6
    return commands


@pytest.mark.parametrize("argv", documented_commands(), ids=" ".join)
def test_the_readme_shows_only_commands_and_options_that_exist(argv):
    command: click.Command = cli
    words = list(argv)
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        sub = command.get_command(click.Context(command), words.pop(0))
        assert sub is not None, f"no such command in {argv}"
        command = sub
    options = {name for param in command.params for name in getattr(param, "opts", [])}
    options |= {"--help", "-h"}
    for word in words:
        if word.startswith("-"):
            assert word in options, f"{word} is not an option of {argv}"


def test_the_readme_lists_every_event_the_node_command_logs():
    readme = README.read_text(encoding="utf-8")
    cli_dir = Path(__file__).resolve().parents[2] / "p2pstore" / "cli"
    sources = [
        cli_dir / name for name in ("node_commands.py", "lifeline.py", "certificate_expiry.py")
    ]
    # Every module a node process runs (client.py too: a steward stores and fetches as one).
    sources += sorted((Path(__file__).resolve().parents[2] / "p2pstore" / "net").glob("*.py"))
    events = set()
    for source in sources:
        events |= set(re.findall(r'"event": "(\w+)"', source.read_text(encoding="utf-8")))
    assert events >= {"starting", "listening", "peer_connected", "peer_refused", "stopped"}
    for event in events:
        assert f"`{event}`" in readme, f"bootstrap/README.md does not explain {event}"
