"""Coding rules declared in ``[rules.NAME]`` tables: valid tables round-trip, every invalid
field is refused naming the file, the rule and the key."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.core.rules import (
    MAX_SHARES,
    RULE_KEYS,
    SHIPPED_RULES,
    CodingRule,
    parse_duration,
    rule_table,
    rules_from_table,
)
from p2pstore.errors import ConfigError

SOURCE = "node.toml"
REGIONS = ("FR", "FR-GES", "FR-IDF", "DE-BW", "BE-VLG")

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)


@st.composite
def coding_rules(draw, name=names):
    n = draw(st.integers(1, MAX_SHARES))
    k = draw(st.integers(1, n))
    return CodingRule(
        draw(name),
        k=k,
        n=n,
        repair_threshold=draw(st.integers(k, n)),
        regions=draw(st.frozensets(st.sampled_from(REGIONS))),
        max_per_datacenter=draw(st.integers(1, MAX_SHARES)),
        grace_period=draw(st.floats(0, 1e9, allow_nan=False) | st.integers(0, 10**9).map(float)),
    )


def refusal(table: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        rules_from_table(table, source=SOURCE)
    return str(caught.value)


@settings(max_examples=200, deadline=None)
@given(coding_rules())
def test_any_valid_table_round_trips(rule):
    rules = rules_from_table({rule.name: rule_table(rule)}, source=SOURCE)
    assert rules[rule.name] == rule
    assert set(rules) == set(SHIPPED_RULES) | {rule.name}
    for name, shipped in SHIPPED_RULES.items():
        if name != rule.name:
            assert rules[name] == shipped


@settings(max_examples=100, deadline=None)
@given(st.lists(coding_rules(), max_size=4, unique_by=lambda r: r.name))
def test_several_declared_rules_are_all_kept(declared):
    rules = rules_from_table({r.name: rule_table(r) for r in declared}, source=SOURCE)
    assert {r.name: rules[r.name] for r in declared} == {r.name: r for r in declared}


def test_no_table_means_the_shipped_rules():
    assert rules_from_table({}, source=SOURCE) == SHIPPED_RULES


def test_a_new_rule_takes_the_documented_defaults():
    rules = rules_from_table({"gov": {"k": 2, "n": 5, "repair_threshold": 4}}, source=SOURCE)
    assert rules["gov"] == CodingRule(
        "gov", k=2, n=5, repair_threshold=4, regions=frozenset(), max_per_datacenter=1,
        grace_period=3600.0,
    )  # fmt: skip


def test_a_declared_rule_replaces_the_shipped_one_keeping_what_it_leaves_out():
    rules = rules_from_table({"standard": {"regions": ["FR-GES"]}}, source=SOURCE)
    shipped = SHIPPED_RULES["standard"]
    assert rules["standard"].regions == frozenset({"FR-GES"})
    assert (rules["standard"].k, rules["standard"].n) == (shipped.k, shipped.n)
    assert rules["standard"].repair_threshold == shipped.repair_threshold
    assert SHIPPED_RULES["standard"].regions == frozenset()  # the shipped value is untouched


def test_changing_k_or_n_of_a_shipped_rule_requires_its_threshold():
    message = refusal({"standard": {"k": 5, "n": 10}})
    assert message.startswith(f"{SOURCE}: [rules.standard] repair_threshold: is required")
    assert "4-of-8" in message
    rules = rules_from_table({"standard": {"k": 5, "n": 10, "repair_threshold": 7}}, source=SOURCE)
    assert (rules["standard"].k, rules["standard"].n, rules["standard"].repair_threshold) == (
        5, 10, 7,
    )  # fmt: skip


@pytest.mark.parametrize("missing", ["k", "n", "repair_threshold"])
def test_a_new_rule_must_give_k_n_and_threshold(missing):
    fields = {"k": 4, "n": 8, "repair_threshold": 6}
    del fields[missing]
    message = refusal({"gov": fields})
    assert message.startswith(f"{SOURCE}: [rules.gov] {missing}: is required")


def test_the_example_message_names_file_rule_key_and_bounds():
    message = refusal({"gov": {"k": 4, "n": 8, "repair_threshold": 9}})
    assert message == (
        f"{SOURCE}: [rules.gov] repair_threshold: must be between k=4 and n=8, got 9"
    )


# One invalid value per key, drawn so that every other field stays valid.
INVALID: dict[str, st.SearchStrategy[object]] = {
    "k": st.integers(max_value=0)
    | st.integers(min_value=MAX_SHARES + 1)
    | st.sampled_from([True, 4.0, "4", None, [4]]),
    "n": st.integers(max_value=3)  # below k=4
    | st.integers(min_value=MAX_SHARES + 1)
    | st.sampled_from([False, 8.5, "8"]),
    "repair_threshold": st.integers(max_value=3)
    | st.integers(min_value=9)
    | st.sampled_from([True, 6.0, "6"]),
    "regions": st.sampled_from(["FR-GES", ["fr-ges"], ["FR-GES", 3], [""], ["France"], {}, 1]),
    "max_per_datacenter": st.integers(max_value=0) | st.sampled_from([True, 1.5, "1"]),
    "grace_period": st.floats(max_value=-1e-9)
    | st.sampled_from([float("inf"), float("nan"), True, "1 fortnight", "h", "-5m", [60]]),
}


@settings(max_examples=300, deadline=None)
@given(
    name=names,
    key=st.sampled_from(sorted(INVALID)),
    data=st.data(),
)
def test_any_invalid_field_is_refused_by_name(name, key, data):
    fields: dict[str, object] = {
        "k": 4, "n": 8, "repair_threshold": 6, "regions": ["FR-GES"],
        "max_per_datacenter": 1, "grace_period": 60,
    }  # fmt: skip
    fields[key] = data.draw(INVALID[key], label=key)
    message = refusal({name: fields})
    header = f"[rules.{name}]" if "." not in name else f'[rules."{name}"]'
    assert message.startswith(f"{SOURCE}: {header} {key}"), message
    assert "\n" not in message


@settings(max_examples=100, deadline=None)
@given(
    unknown=st.lists(
        st.from_regex(r"[a-z_]{1,20}", fullmatch=True).filter(lambda key: key not in RULE_KEYS),
        min_size=1,
        max_size=3,
        unique=True,
    )
)
def test_unknown_keys_are_refused_naming_them(unknown):
    fields: dict[str, object] = {"k": 4, "n": 8, "repair_threshold": 6}
    fields.update(dict.fromkeys(unknown, 1))
    message = refusal({"gov": fields})
    assert message.startswith(f"{SOURCE}: [rules.gov] {', '.join(unknown)}: unknown key")
    assert "repair_threshold, regions, max_per_datacenter, grace_period" in message


def test_an_unknown_key_gets_a_suggestion():
    message = refusal({"gov": {"k": 4, "n": 8, "repair_threshold": 6, "regoins": []}})
    assert "[rules.gov] regoins: unknown key; did you mean 'regions'?" in message


@pytest.mark.parametrize("name", ["-x", "a b", "é", "x" * 65, ""])
def test_a_name_a_manifest_cannot_carry_is_refused(name):
    message = refusal({name: {"k": 1, "n": 1, "repair_threshold": 1}})
    assert message.startswith(f"{SOURCE}: ") and "bad rule name" in message


@pytest.mark.parametrize("fields", [4, "k=4", [4, 8]])
def test_a_rule_that_is_not_a_table_is_refused(fields):
    assert "[rules.gov]: must be a table" in refusal({"gov": fields})


def test_the_rules_section_must_be_a_table():
    with pytest.raises(ConfigError, match=r"node\.toml: \[rules\]: must be a table"):
        rules_from_table(["gov"], source=SOURCE)  # type: ignore[arg-type]


def test_a_region_is_named_with_its_index_and_a_hint():
    message = refusal({"gov": {"k": 1, "n": 2, "repair_threshold": 2, "regions": ["FR", "fr-ges"]}})
    assert "[rules.gov] regions[1]: invalid region 'fr-ges'" in message
    assert "did you mean 'FR-GES'?" in message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (90, 90.0), (1.5, 1.5), ("90s", 90.0), ("30m", 1800.0), ("1h", 3600.0),
     ("1.5 h", 5400.0), ("2d", 172800.0), ("10min", 600.0)],
)  # fmt: skip
def test_durations_are_seconds_or_a_number_with_a_unit(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["1 fortnight", "h", "1H", "-1h", -1, True, None, "inf"])
def test_bad_durations_are_refused_with_an_example(value):
    with pytest.raises(ConfigError, match=r"30m|expected a finite"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"name": "a b"}, "rule name"),
        ({"grace_period": float("nan")}, "grace_period"),
        ({"grace_period": float("inf")}, "grace_period"),
    ],
)
def test_a_rule_value_checks_its_name_and_grace_period(kwargs, problem):
    fields = {"name": "gov", "k": 1, "n": 1, "repair_threshold": 1, **kwargs}
    with pytest.raises(ConfigError, match=problem):
        CodingRule(**fields)
