"""node.toml validation: every mistake is refused with the file and the key named."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.cli.client_config import RULES_EXAMPLE, load_client_config, write_client_config
from p2pstore.cli.config import (
    _SCHEMA,
    ConfigReader,
    NodeConfig,
    load_node_config,
    parse_size,
    read_audits,
)
from p2pstore.cli.config_render import render_node_config
from p2pstore.cli.config_sections import read_gc
from p2pstore.cli.limits import LIMIT_KEYS
from p2pstore.cli.main import cli
from p2pstore.core.audit import AuditSettings
from p2pstore.core.rules import MAX_SHARES, SHIPPED_RULES, CodingRule
from p2pstore.errors import ConfigError, QuotaExceeded
from p2pstore.identity import MeshCA
from p2pstore.net.collection import CollectionSettings
from p2pstore.net.scrubber import ScrubSettings

GOV = CodingRule(
    "gov", k=3, n=7, repair_threshold=5, regions=frozenset({"FR-GES", "FR-IDF"}),
    max_per_datacenter=2, grace_period=1800.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a node's identity files, as ``p2pstore ca`` writes them."""
    directory = tmp_path_factory.mktemp("node")
    authority = MeshCA.create(directory / "ca", mesh_name="test", now=datetime.now(UTC))
    authority.issue(directory, "node", datacenter="dc-1", region="FR-GES", now=datetime.now(UTC))
    return directory


GOOD = {
    "node": {"listen": "127.0.0.1:7400", "advertise": "node1.example.org:7400", "data_dir": "data"},
    "identity": {
        "key": "node.key",
        "certificate": "node.crt",
        "ca_certificate": "ca/ca.crt",
        "revocation_list": "ca/crl.pem",
    },
    "bootstrap": {"peers": ["10.0.0.2:7400", "[2001:db8::1]:7400"]},
    "log": {"level": "debug", "format": "json"},
}


def toml_value(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def write(directory: Path, document: dict[str, object], name: str = "node.toml") -> Path:
    lines = []
    for section, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        else:
            lines.insert(0, f"{section} = {toml_value(table)}")
    path = directory / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def changed(section: str, key: str, value: object) -> dict[str, object]:
    """GOOD with one key replaced (or removed when ``value`` is None)."""
    document = {name: dict(table) for name, table in GOOD.items()}
    if value is None:
        del document[section][key]
    else:
        document[section][key] = value
    return document


def refusal(node_dir: Path, document: dict[str, object]) -> str:
    path = write(node_dir, document, "bad.toml")
    with pytest.raises(ConfigError) as caught:
        load_node_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message  # names the file
    assert "\n" not in message
    return message


def test_a_full_config_loads_with_paths_relative_to_the_file(node_dir):
    config = load_node_config(write(node_dir, GOOD))
    assert config == NodeConfig(
        path=node_dir / "node.toml",
        listen="127.0.0.1:7400",
        advertise="node1.example.org:7400",
        data_dir=node_dir / "data",
        key=node_dir / "node.key",
        certificate=node_dir / "node.crt",
        ca_certificate=node_dir / "ca" / "ca.crt",
        revocation_list=node_dir / "ca" / "crl.pem",
        bootstrap_peers=("10.0.0.2:7400", "[2001:db8::1]:7400"),
        seeds=(),
        quota_bytes=None,
        log_level="debug",
        log_format="json",
    )


def test_optional_keys_take_their_defaults(node_dir):
    document = {
        "node": {"listen": "0.0.0.0:7400", "data_dir": "/var/lib/p2pstore"},
        "identity": {"key": "node.key", "certificate": "node.crt", "ca_certificate": "ca/ca.crt"},
    }
    config = load_node_config(write(node_dir, document))
    assert config.advertise is None
    assert config.revocation_list is None
    assert config.bootstrap_peers == ()
    assert (config.log_level, config.log_format) == ("info", "text")
    assert config.data_dir == Path("/var/lib/p2pstore")


@pytest.mark.parametrize(
    ("section", "typo", "meant"),
    [
        ("node", "lisen", "listen"),
        ("identity", "certificat", "certificate"),
        ("log", "lvl", "level"),
        ("log", "colour", None),
    ],
)
def test_an_unknown_key_is_named_with_a_suggestion(node_dir, section, typo, meant):
    document = changed(section, typo, "x")
    message = refusal(node_dir, document)
    assert f"[{section}] {typo}: unknown key" in message
    if meant:
        assert message.endswith(f"did you mean {meant!r}?")
    else:
        assert "did you mean" not in message


def test_an_unknown_section_is_named_with_a_suggestion(node_dir):
    document = {**GOOD, "bootstap": {"peers": []}}
    assert "[bootstap]: unknown key; did you mean 'bootstrap'?" in refusal(node_dir, document)


@pytest.mark.parametrize(
    ("section", "key"),
    [("node", "listen"), ("node", "data_dir"), ("identity", "key"), ("identity", "ca_certificate")],
)
def test_a_missing_required_key_is_named(node_dir, section, key):
    assert f"[{section}] {key}: is required" in refusal(node_dir, changed(section, key, None))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("node", "listen", 7400),
        ("node", "data_dir", ""),
        ("identity", "key", ["node.key"]),
        ("log", "level", True),
    ],
)
def test_a_value_of_the_wrong_type_is_named(node_dir, section, key, value):
    message = refusal(node_dir, changed(section, key, value))
    assert f"[{section}] {key}: expected a non-empty string, got {value!r}" in message


def test_a_section_that_is_not_a_table_is_named(node_dir):
    document = {**GOOD, "log": "debug"}
    assert "[log]: must be a table" in refusal(node_dir, document)


@pytest.mark.parametrize("peers", ["10.0.0.2:7400", [7400]])
def test_bootstrap_peers_must_be_a_list_of_strings(node_dir, peers):
    message = refusal(node_dir, changed("bootstrap", "peers", peers))
    assert '[bootstrap] peers: expected a list of "host:port" strings' in message


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("node", "listen", "127.0.0.1"),
        ("node", "listen", "localhost:http"),
        ("node", "advertise", "node1.example.org:99999"),
        ("node", "listen", ":7400"),
    ],
)
def test_a_bad_address_is_named(node_dir, section, key, value):
    message = refusal(node_dir, changed(section, key, value))
    assert f"[{section}] {key}: bad address {value!r}" in message


def test_a_bad_bootstrap_address_is_named_with_its_index(node_dir):
    message = refusal(node_dir, changed("bootstrap", "peers", ["10.0.0.2:7400", "10.0.0.3"]))
    assert "[bootstrap] peers[1]: bad address '10.0.0.3'" in message


@pytest.mark.parametrize(
    ("section", "key", "value", "where"),
    [
        ("bootstrap", "peers", ["10.0.0.2:0"], "[bootstrap] peers[0]: '10.0.0.2:0'"),
        ("node", "advertise", "node1.example.org:0", "[node] advertise: 'node1.example.org:0'"),
    ],
)
def test_port_zero_cannot_be_dialled(node_dir, section, key, value, where):
    message = refusal(node_dir, changed(section, key, value))
    assert f"{where}: port 0 cannot be dialled" in message


def test_listening_on_port_zero_is_allowed(node_dir):
    assert load_node_config(write(node_dir, changed("node", "listen", "127.0.0.1:0"))).listen == (
        "127.0.0.1:0"
    )


@pytest.mark.parametrize("key", ["key", "certificate", "ca_certificate", "revocation_list"])
def test_a_missing_identity_file_is_named(node_dir, key):
    message = refusal(node_dir, changed("identity", key, "nowhere/missing.pem"))
    assert f"[identity] {key}: no such file: {node_dir / 'nowhere' / 'missing.pem'}" in message


@pytest.mark.parametrize(
    ("key", "value"), [("level", "verbose"), ("level", "INFO"), ("format", "xml")]
)
def test_a_bad_log_choice_lists_the_good_ones(node_dir, key, value):
    message = refusal(node_dir, changed("log", key, value))
    assert f"[log] {key}: expected one of " in message
    assert f"got {value!r}" in message
    assert ("debug, info, warning, error" if key == "level" else "text, json") in message


def test_invalid_toml_is_refused_with_its_position(node_dir):
    path = node_dir / "broken.toml"
    path.write_text('[node]\nlisten = "127.0.0.1:7400\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_node_config(path)
    assert str(caught.value).startswith(f"{path}: not valid TOML: ")
    assert "line 2" in str(caught.value)


def test_a_file_that_is_not_utf8_is_refused(node_dir):
    path = node_dir / "latin1.toml"
    path.write_bytes('[node]\nlisten = "café:7400"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_node_config(path)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: no such configuration file"):
        load_node_config(tmp_path / "missing.toml")


def test_a_rendered_config_loads_back_as_given(node_dir):
    text = render_node_config(
        listen="127.0.0.1:7401",
        advertise="node2.example.org:7401",
        data_dir="data-2",
        key="node.key",
        certificate="node.crt",
        ca_certificate="ca/ca.crt",
        revocation_list="ca/crl.pem",
        bootstrap_peers=("127.0.0.1:7400", "127.0.0.1:7402"),
        log_level="warning",
        log_format="json",
    )
    (node_dir / "rendered.toml").write_text(text, encoding="utf-8")
    config = load_node_config(node_dir / "rendered.toml")
    assert config.listen == "127.0.0.1:7401"
    assert config.advertise == "node2.example.org:7401"
    assert config.data_dir == node_dir / "data-2"
    assert config.revocation_list == node_dir / "ca" / "crl.pem"
    assert config.bootstrap_peers == ("127.0.0.1:7400", "127.0.0.1:7402")
    assert (config.log_level, config.log_format) == ("warning", "json")


def test_a_minimal_rendered_config_loads_back_with_defaults(node_dir):
    text = render_node_config(
        listen="127.0.0.1:0",
        data_dir="data",
        key="node.key",
        certificate="node.crt",
        ca_certificate="ca/ca.crt",
    )
    (node_dir / "minimal.toml").write_text(text, encoding="utf-8")
    config = load_node_config(node_dir / "minimal.toml")
    assert (config.advertise, config.revocation_list, config.bootstrap_peers) == (None, None, ())


def test_the_renderer_writes_only_known_keys():
    text = render_node_config(
        listen="a:1", data_dir="d", key="k", certificate="c", ca_certificate="ca",
        revocation_list="r", advertise="b:2", bootstrap_peers=("e:3",), seed_file="s",
        quota="1 GiB", metrics_listen="127.0.0.1:9464", metrics_allow_public=True,
        repair_check_interval=30, rules={"gov": GOV}, fragment_bytes_per_identity="10%",
        limits=dict.fromkeys(LIMIT_KEYS, 4), audits=AuditSettings(0.5, 60, 7.5),
        scrub=ScrubSettings(batch_bytes=3 * 2**30, interval=2.5), trust_refresh=60,
        gc=CollectionSettings(grace_period=60.0, sweep_interval=5.0, enabled=True),
        require_fresh_revocation_list=True,
    )  # fmt: skip
    document = tomllib.loads(text)
    assert document["identity"]["trust_refresh"] == 60.0
    assert document["identity"]["require_fresh_revocation_list"] is True
    gc = read_gc(ConfigReader(Path("x.toml"), document))
    assert gc == CollectionSettings(60.0, 5.0, enabled=True)
    assert set(document.pop("rules")) == {"gov"}
    assert read_audits(ConfigReader(Path("x.toml"), document)) == AuditSettings(0.5, 60, 7.5)
    assert document["scrub"] == {"interval": 2.5, "batch": str(3 * 2**30)}
    assert {s: set(t) for s, t in document.items()} == {s: set(k) for s, k in _SCHEMA.items()}


@settings(max_examples=60, deadline=None)
@given(
    path=st.text(min_size=1, max_size=30),
    peers=st.lists(st.text(max_size=20), max_size=3),
)
def test_any_string_survives_rendering(path, peers):
    """Quotes, backslashes, newlines and other control characters are escaped, not written raw."""
    text = render_node_config(
        listen=path, data_dir=path, key=path, certificate=path, ca_certificate=path,
        revocation_list=path, advertise=path, bootstrap_peers=tuple(peers),
    )  # fmt: skip
    document = tomllib.loads(text)
    assert document["node"] == {"listen": path, "advertise": path, "data_dir": path}
    assert document["identity"]["revocation_list"] == path
    assert document["bootstrap"]["peers"] == peers


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1048576", 2**20), ("500 GiB", 500 * 2**30), ("2TB", 2 * 10**12), ("1.5 MiB", 3 * 2**19)],
)
def test_sizes_are_read_with_their_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "12 parsecs", "-3 GiB", "1e9"])
def test_bad_sizes_are_refused_with_an_example(text):
    with pytest.raises(ConfigError, match=r"e\.g\."):
        parse_size(text)


# -- coding rules and the repair interval ------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "bootstrap" / "node.toml"


def with_text(node_dir: Path, extra: str, name: str = "rules.toml") -> Path:
    """GOOD's node.toml with ``extra`` TOML appended."""
    path = write(node_dir, GOOD, name)
    path.write_text(path.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


def test_without_rules_or_repair_the_node_knows_the_shipped_rules_and_checks_every_10_minutes(
    node_dir,
):
    config = load_node_config(write(node_dir, GOOD))
    assert config.rules == SHIPPED_RULES
    assert config.repair_check_interval == 600.0


def test_declared_rules_and_the_check_interval_are_read(node_dir):
    path = with_text(
        node_dir,
        '[repair]\ncheck_interval = "10m"\n'
        '[rules.gov]\nk = 3\nn = 7\nrepair_threshold = 5\nregions = ["FR-GES", "FR-IDF"]\n'
        'max_per_datacenter = 2\ngrace_period = "30m"\n'
        '[rules.standard]\nregions = ["FR-GES"]\n',
    )
    config = load_node_config(path)
    assert config.repair_check_interval == 600.0
    assert config.rules["gov"] == GOV
    assert config.rules["standard"].regions == frozenset({"FR-GES"})
    assert config.rules["archive"] == SHIPPED_RULES["archive"]


@pytest.mark.parametrize("value", ["0", "-5", '"soon"', "true", '"0s"', "nan"])
def test_a_bad_check_interval_is_named(node_dir, value):
    path = with_text(node_dir, f"[repair]\ncheck_interval = {value}\n", "bad.toml")
    with pytest.raises(ConfigError) as caught:
        load_node_config(path)
    assert str(caught.value).startswith(f"{path}: [repair] check_interval: ")


def test_the_scrub_pace_defaults_to_16_mib_every_30_s_and_is_read_from_scrub(node_dir):
    assert load_node_config(write(node_dir, GOOD)).scrub == ScrubSettings(16 * 2**20, 30.0)
    path = with_text(node_dir, '[scrub]\ninterval = "2m"\nbatch = "64 MiB"\n')
    assert load_node_config(path).scrub == ScrubSettings(64 * 2**20, 120.0)
    rendered = node_dir / "scrub.toml"
    rendered.write_text(
        render_node_config(
            listen="127.0.0.1:0", data_dir="data", key="node.key", certificate="node.crt",
            ca_certificate="ca/ca.crt", scrub=ScrubSettings(2**30, 0.25),
        ),
        encoding="utf-8",
    )  # fmt: skip
    assert load_node_config(rendered).scrub == ScrubSettings(2**30, 0.25)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("interval", "0"),
        ("interval", "-1"),
        ("interval", '"soon"'),
        ("batch", '"0 MiB"'),
        ("batch", '"lots"'),
        ("batch", "16"),
    ],
)
def test_a_bad_scrub_setting_is_named(node_dir, key, value):
    path = with_text(node_dir, f"[scrub]\n{key} = {value}\n", "bad.toml")
    with pytest.raises(ConfigError) as caught:
        load_node_config(path)
    assert str(caught.value).startswith(f"{path}: [scrub] {key}: ")


def test_audits_default_to_the_planners_rate_and_are_read_from_repair(node_dir):
    assert load_node_config(write(node_dir, GOOD)).audits == AuditSettings()
    path = with_text(
        node_dir,
        "[repair]\naudit_fraction_per_day = 0.1\naudits_per_holder_per_hour = 0\n"
        'audit_timeout = "1m"\n',
    )
    assert load_node_config(path).audits == AuditSettings(0.1, 0.0, 60.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("audit_fraction_per_day", "1.5"),
        ("audit_fraction_per_day", "-0.1"),
        ("audit_fraction_per_day", '"2%"'),
        ("audits_per_holder_per_hour", "nan"),
        ("audits_per_holder_per_hour", "true"),
        ("audit_timeout", "0"),
        ("audit_timeout", '"soon"'),
    ],
)
def test_a_bad_audit_setting_is_named(node_dir, key, value):
    path = with_text(node_dir, f"[repair]\n{key} = {value}\n", "bad.toml")
    with pytest.raises(ConfigError) as caught:
        load_node_config(path)
    assert str(caught.value).startswith(f"{path}: [repair] {key}: ")


def test_a_bad_rule_is_refused_naming_the_file_the_rule_and_the_key(node_dir):
    path = with_text(node_dir, "[rules.gov]\nk = 4\nn = 8\nrepair_threshold = 9\n", "bad.toml")
    with pytest.raises(ConfigError) as caught:
        load_node_config(path)
    assert str(caught.value) == (
        f"{path}: [rules.gov] repair_threshold: must be between k=4 and n=8, got 9"
    )


def test_a_misspelled_rules_section_gets_a_suggestion(node_dir):
    path = with_text(node_dir, "[rule.gov]\nk = 1\nn = 1\nrepair_threshold = 1\n", "bad.toml")
    with pytest.raises(ConfigError, match=r"\[rule\]: unknown key; did you mean 'rules'\?"):
        load_node_config(path)


def uncommented_rules_example(text: str) -> str:
    """The commented ``[rules.NAME]`` example of a file, uncommented."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"# \[rules\.[\w-]+\]", line))
    example = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        if not line.startswith("# #"):
            example.append(line.removeprefix("# "))
    return "\n".join(example) + "\n"


def test_the_rules_example_of_the_bootstrap_node_toml_loads(node_dir):
    example = uncommented_rules_example(EXAMPLE.read_text(encoding="utf-8"))
    config = load_node_config(with_text(node_dir, example, "example.toml"))
    declared = set(config.rules) - set(SHIPPED_RULES)
    assert len(declared) == 1
    rule = config.rules[declared.pop()]
    assert (rule.k, rule.n, rule.repair_threshold, rule.max_per_datacenter) == (4, 8, 6, 1)
    assert rule.regions and rule.grace_period == 3600.0


@st.composite
def coding_rules(draw):
    n = draw(st.integers(1, MAX_SHARES))
    k = draw(st.integers(1, n))
    return CodingRule(
        draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}", fullmatch=True)),
        k=k,
        n=n,
        repair_threshold=draw(st.integers(k, n)),
        regions=draw(st.frozensets(st.sampled_from(["FR", "FR-GES", "DE-BW"]))),
        max_per_datacenter=draw(st.integers(1, 9)),
        grace_period=draw(st.floats(0, 1e9)),
    )


@settings(max_examples=40, deadline=None)
@given(
    rules=st.lists(coding_rules(), max_size=3, unique_by=lambda rule: rule.name),
    interval=st.floats(1e-3, 1e7),
)
def test_rendered_rules_and_interval_load_back_through_toml(node_dir, rules, interval):
    text = render_node_config(
        listen="127.0.0.1:0", data_dir="data", key="node.key", certificate="node.crt",
        ca_certificate="ca/ca.crt", repair_check_interval=interval,
        rules={rule.name: rule for rule in rules},
    )  # fmt: skip
    (node_dir / "rendered-rules.toml").write_text(text, encoding="utf-8")
    config = load_node_config(node_dir / "rendered-rules.toml")
    assert config.repair_check_interval == interval
    assert config.rules == {**SHIPPED_RULES, **{rule.name: rule for rule in rules}}


# -- the client's rules ---------------------------------------------------------------------


@pytest.fixture
def client_toml(tmp_path: Path) -> Path:
    for name in ("c.key", "c.crt", "ca.crt"):
        (tmp_path / name).write_text("x")
    return write_client_config(
        tmp_path, key="c.key", certificate="c.crt", ca_certificate="ca.crt",
        revocation_list=None, bootstrap_peers=("127.0.0.1:7000",), rules={"gov": GOV},
    )  # fmt: skip


def test_a_client_knows_the_rules_it_declares(client_toml):
    config = load_client_config(client_toml)
    assert config.rules == {**SHIPPED_RULES, "gov": GOV}
    assert config.rule == SHIPPED_RULES["standard"]
    client_toml.write_text(client_toml.read_text().replace('rule = "standard"', 'rule = "gov"'))
    assert load_client_config(client_toml).rule == GOV


def test_an_unknown_default_rule_lists_the_known_ones(client_toml):
    client_toml.write_text(client_toml.read_text().replace('rule = "standard"', 'rule = "fed"'))
    with pytest.raises(ConfigError) as caught:
        load_client_config(client_toml)
    assert str(caught.value) == (
        f"{client_toml}: [client] rule: no coding rule named 'fed'; known rules: archive, gov, "
        "replica-3, standard; or declare it in a [rules.fed] table"
    )


def test_a_bad_client_rule_names_the_client_file(client_toml):
    text = client_toml.read_text().replace("repair_threshold = 5", "repair_threshold = 8")
    client_toml.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_client_config(client_toml)
    assert str(caught.value).startswith(f"{client_toml}: [rules.gov] repair_threshold: ")


def test_the_rules_example_of_a_written_client_toml_loads(client_toml):
    text = client_toml.read_text()
    assert "\n".join(RULES_EXAMPLE) in text
    example = uncommented_rules_example(text).replace("[rules.gov]", "[rules.example]")
    client_toml.write_text(text + example)
    rule = load_client_config(client_toml).rules["example"]
    assert (rule.k, rule.n, rule.repair_threshold, rule.grace_period) == (4, 8, 6, 3600.0)


def test_put_refuses_an_unknown_rule_listing_the_known_ones_before_dialling(client_toml):
    source = client_toml.parent / "file.bin"
    source.write_bytes(b"data")
    result = CliRunner().invoke(
        cli, ["put", str(source), "--rule", "fed", "--config", str(client_toml)]
    )
    assert result.exit_code == 2, result.output
    assert "--rule: no coding rule named 'fed'; known rules: archive, gov, replica-3, standard" in (
        result.output
    )


@pytest.mark.parametrize("excess", [True, False])
def test_a_quota_larger_than_the_disk_is_warned_about_at_start(node_dir, tmp_path, excess, caplog):
    import shutil
    from dataclasses import replace

    from p2pstore.cli.node_commands import _open_store

    config = load_node_config(write(node_dir, GOOD))
    free = shutil.disk_usage(tmp_path).free
    quota = free * 4 if excess else 1024 * 1024
    config = replace(config, data_dir=tmp_path / "data", quota_bytes=quota)
    with _open_store(config) as store:
        assert store.usage().quota_bytes == quota  # the operator's figure still applies
    warned = [r for r in caplog.records if getattr(r, "event", None) == "quota_exceeds_disk"]
    assert len(warned) == int(excess)
    if excess:
        assert warned[0].quota_bytes == quota and warned[0].room_bytes < quota
        assert "lower the quota" in warned[0].getMessage()


async def test_join_failures_warn_while_backing_off_and_are_errors_once_at_the_longest(
    autojump_clock, caplog
):
    """A node whose bootstrap peers are still starting logs warnings, not errors: an alert on
    ERROR fires only once the retries are a minute apart (the problem persists)."""
    import logging
    from types import SimpleNamespace

    import trio

    from p2pstore.cli.node_commands import JOIN_RETRY_MAX, _join_and_announce
    from p2pstore.errors import PeerUnreachable

    async def never_joins(*_args: object, **_kwargs: object) -> None:
        raise PeerUnreachable("none of the 1 bootstrap peers answered")

    config = SimpleNamespace(join_through=lambda: ())
    dht = SimpleNamespace(join=never_joins)
    with trio.move_on_after(3 * JOIN_RETRY_MAX + 1):
        await _join_and_announce(config, dht, None, [], None)  # type: ignore[arg-type]
    levels = [r.levelno for r in caplog.records if getattr(r, "event", None) == "join_failed"]
    first_error = levels.index(logging.ERROR)
    assert first_error >= 5 and set(levels[:first_error]) == {logging.WARNING}  # 1, 2, ... 32 s
    assert set(levels[first_error:]) == {logging.ERROR}
    assert len(levels) - first_error >= 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 250_000), ('"10%"', 100_000), ('"100%"', 1_000_000), ('"64 KiB"', 65_536)],
)
def test_the_fragment_share_of_one_identity_is_a_size_or_a_share_of_the_quota(
    node_dir, tmp_path, value, expected
):
    from dataclasses import replace

    from p2pstore.cli.node_commands import _open_store

    text = "" if value is None else f"[limits]\nfragment_bytes_per_identity = {value}\n"
    config = load_node_config(with_text(node_dir, text, "limits.toml"))
    assert config.fragment_bytes_per_identity.of(1_000_000) == expected
    config = replace(config, data_dir=tmp_path / "data", quota_bytes=1_000_000)
    with _open_store(config) as store:
        store.put(*_fragment(expected), b"\x01" * 20)
        full = "store is full" if expected == 1_000_000 else f"{expected} bytes one identity"
        with pytest.raises(QuotaExceeded, match=full):
            store.put(*_fragment(1, seed=2), b"\x01" * 20)


def _fragment(size: int, seed: int = 1) -> tuple[bytes, bytes]:
    import random

    from p2pstore.codec.fragment_ids import fragment_id

    data = random.Random(seed).randbytes(size)
    return fragment_id(data), data


@pytest.mark.parametrize("value", ['"0%"', '"101%"', '"lots"', '"0 GiB"', "25", '"%"'])
def test_a_bad_fragment_share_is_named(node_dir, value):
    path = with_text(node_dir, f"[limits]\nfragment_bytes_per_identity = {value}\n", "bad.toml")
    with pytest.raises(ConfigError) as caught:
        load_node_config(path)
    assert str(caught.value).startswith(f"{path}: [limits] fragment_bytes_per_identity: ")
