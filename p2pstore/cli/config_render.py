"""Writing node.toml: the local mesh's files and the operator's tools render them here, and
:mod:`p2pstore.cli.config` reads them back (tests check the round trip)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from p2pstore.core.audit import AuditSettings
from p2pstore.core.rules import CodingRule, rule_table, rule_table_header
from p2pstore.net.collection import CollectionSettings
from p2pstore.net.scrubber import ScrubSettings


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string: quote and backslash escaped, control characters (which
    TOML forbids raw, newlines included) as ``\\uXXXX``."""

    def escape(char: str) -> str:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return f"\\u{ord(char):04x}"
        return "\\" + char if char in '"\\' else char

    return '"' + "".join(escape(char) for char in text) + '"'


def render_node_config(
    *,
    listen: str,
    data_dir: str,
    key: str,
    certificate: str,
    ca_certificate: str,
    revocation_list: str | None = None,
    bootstrap_peers: tuple[str, ...] = (),
    seed_file: str | None = None,
    quota: str | None = None,
    advertise: str | None = None,
    log_level: str = "info",
    log_format: str = "text",
    metrics_listen: str | None = None,
    metrics_allow_public: bool = False,
    repair_check_interval: float | None = None,
    audits: AuditSettings | None = None,
    rules: Mapping[str, CodingRule] | None = None,
    fragment_bytes_per_identity: str | None = None,
    limits: Mapping[str, int | float | str] | None = None,
    scrub: ScrubSettings | None = None,
    trust_refresh: float | None = None,
    gc: CollectionSettings | None = None,
    require_fresh_revocation_list: bool = False,
) -> str:
    """A node.toml with these values (used by the local mesh and the operator's tools);
    ``audits`` as the ``[repair] audit_*`` keys, ``rules`` as ``[rules.NAME]`` tables (give
    the mesh's declared ones), ``limits`` as the ``[limits]`` table (its keys and values as in
    node.toml), ``scrub`` as ``[scrub]``, ``trust_refresh`` in seconds, ``gc`` as ``[gc]``."""
    q = toml_string
    lines = ["[node]", f"listen = {q(listen)}"]
    if advertise:
        lines.append(f"advertise = {q(advertise)}")
    lines += [
        f"data_dir = {q(data_dir)}",
        "",
        "[identity]",
        f"key = {q(key)}",
        f"certificate = {q(certificate)}",
        f"ca_certificate = {q(ca_certificate)}",
    ]
    if revocation_list:
        lines.append(f"revocation_list = {q(revocation_list)}")
    if trust_refresh is not None:
        lines.append(f"trust_refresh = {float(trust_refresh)!r}")
    lines += ["require_fresh_revocation_list = true"] if require_fresh_revocation_list else []
    lines += [
        "",
        "[bootstrap]",
        "peers = [" + ", ".join(q(p) for p in bootstrap_peers) + "]",
        *([f"seed_file = {q(seed_file)}"] if seed_file else []),
        "",
        "[store]",
        *([f"quota = {q(quota)}"] if quota else []),
        "",
        "[log]",
        f"level = {q(log_level)}",
        f"format = {q(log_format)}",
        "",
    ]
    if metrics_listen is not None:
        lines += ["[metrics]", f"listen = {q(metrics_listen)}"]
        lines += ["allow_public = true"] if metrics_allow_public else []
        lines.append("")
    if repair_check_interval is not None or audits is not None:
        lines.append("[repair]")
        if repair_check_interval is not None:
            lines.append(f"check_interval = {float(repair_check_interval)!r}")
        if audits is not None:
            lines += [
                f"audit_fraction_per_day = {float(audits.fraction_per_day)!r}",
                f"audits_per_holder_per_hour = {float(audits.min_per_holder_per_hour)!r}",
                f"audit_timeout = {float(audits.answer_timeout)!r}",
            ]
        lines.append("")
    if limits or fragment_bytes_per_identity is not None:
        lines.append("[limits]")
        if fragment_bytes_per_identity is not None:
            lines.append(f"fragment_bytes_per_identity = {q(fragment_bytes_per_identity)}")
        for name, value in (limits or {}).items():
            text = toml_string(value) if isinstance(value, str) else repr(value)
            lines.append(f"{name} = {text}")
        lines.append("")
    if scrub is not None:
        lines += [
            "[scrub]",
            f"interval = {float(scrub.interval)!r}",
            f"batch = {q(str(scrub.batch_bytes))}",
            "",
        ]
    if gc is not None:
        lines += [
            "[gc]",
            f"enabled = {'true' if gc.enabled else 'false'}",
            f"grace_period = {float(gc.grace_period)!r}",
            f"sweep_interval = {float(gc.sweep_interval)!r}",
            f"lease = {float(gc.initial_lease)!r}",
            "",
        ]
    lines += render_rules(rules or {})
    return "\n".join(lines)


def render_rules(rules: Mapping[str, CodingRule]) -> list[str]:
    """The lines of a ``[rules.NAME]`` table per rule, each followed by a blank line."""
    lines = []
    for name, rule in rules.items():
        lines.append(rule_table_header(name))
        for key, value in rule_table(rule).items():
            if isinstance(value, list):
                text = "[" + ", ".join(toml_string(str(v)) for v in value) + "]"
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return lines


def write_local_node_config(
    node_dir: Path,
    *,
    listen: str,
    bootstrap_peers: tuple[str, ...] = (),
    log_level: str = "info",
    log_format: str = "text",
    metrics_listen: str | None = None,
    rules: Mapping[str, CodingRule] | None = None,
    repair_check_interval: float | None = None,
    limits: Mapping[str, int | float | str] | None = None,
    scrub: ScrubSettings | None = None,
    gc: CollectionSettings | None = None,
) -> Path:
    """Write ``node_dir/node.toml`` for the local-mesh layout: the node's ``node.key`` and
    ``node.crt`` beside it, the CA's ``ca.crt`` and ``crl.pem`` in ``../ca``, data in ``data``.
    Returns the file's path."""
    path = node_dir / "node.toml"
    path.write_text(
        render_node_config(
            listen=listen,
            data_dir="data",
            key="node.key",
            certificate="node.crt",
            ca_certificate="../ca/ca.crt",
            revocation_list="../ca/crl.pem",
            bootstrap_peers=bootstrap_peers,
            log_level=log_level,
            log_format=log_format,
            metrics_listen=metrics_listen,
            rules=rules,
            repair_check_interval=repair_check_interval,
            limits=limits,
            scrub=scrub,
            gc=gc,
        ),
        encoding="utf-8",
    )
    return path
