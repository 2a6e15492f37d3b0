"""What a running node trusts: the mesh CA and revocation list it starts with, reloaded from
disk on SIGHUP, kept at the newest list the CA published in the mesh (see
:mod:`p2pstore.net.mesh_trust`).  A file on disk never takes the node back to an older list than
one the mesh already gave it.  The mesh policy sets the steward's coding rules, which the node's
own configuration may only tighten."""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime

from p2pstore.cli.config import NodeConfig
from p2pstore.cli.crl_freshness import check_file_at_start
from p2pstore.core.mesh_policy import MeshPolicy, tightened
from p2pstore.errors import IdentityError, PeerRefused
from p2pstore.identity import NodeCredentials, TrustAnchor, format_serial
from p2pstore.net.node import Node
from p2pstore.net.steward import Steward

log = logging.getLogger("p2pstore.node")


def load_trust(config: NodeConfig) -> TrustAnchor:
    """The CA certificate and revocation list the node's configuration names."""
    return TrustAnchor.load(config.ca_certificate, config.revocation_list)


def load_starting_trust(config: NodeConfig) -> TrustAnchor:
    """:func:`load_trust` at start: a list past its next update is logged, or refused with
    ``[identity] require_fresh_revocation_list`` (see :mod:`p2pstore.cli.crl_freshness`)."""
    trust = load_trust(config)
    strict = config.require_fresh_revocation_list
    check_file_at_start(trust, config.revocation_list, datetime.now(UTC), strict=strict)
    return trust


def reload_on_sighup(config: NodeConfig, mesh_node: Node) -> None:
    """SIGHUP: the revocation list on disk (:func:`reload_trust`), and the node's certificate
    if it was renewed (:func:`reload_certificate`)."""
    reload_trust(config, mesh_node)
    reload_certificate(config, mesh_node)


def reload_certificate(config: NodeConfig, mesh_node: Node) -> None:
    """Present the certificate file's certificate from now on if it is a renewal of the one in
    use (same key, datacenter and region, signed by the mesh CA, not revoked, valid now and
    longer); anything else is refused and logged, and the node keeps its certificate."""
    current = mesh_node.credentials
    try:
        renewed = NodeCredentials.load(config.key, config.certificate)
        if renewed.certificate == current.certificate:
            return
        mesh_node.transport.trust.verify(renewed.certificate, datetime.now(UTC))
        if renewed.identity.not_after <= current.identity.not_after:
            raise IdentityError(
                f"{config.certificate} expires on {renewed.identity.not_after:%Y-%m-%d}, no "
                f"later than the certificate in use ({current.identity.not_after:%Y-%m-%d})"
            )
        mesh_node.renew_credentials(renewed)
    except (IdentityError, PeerRefused, ssl.SSLError) as exc:
        log.error(
            "could not take the renewed certificate, keeping the one in use: %s",
            exc,
            extra={"event": "certificate_reload_failed"},
        )
        return
    log.info(
        "presenting the renewed certificate %s (valid until %s) from now on; sessions already "
        "up keep the old one",
        format_serial(renewed.identity.serial),
        renewed.identity.not_after.isoformat(),
        extra={
            "event": "certificate_reloaded",
            "serial": format_serial(renewed.identity.serial),
            "not_after": renewed.identity.not_after.isoformat(),
        },
    )


def reload_trust(config: NodeConfig, mesh_node: Node) -> None:
    """SIGHUP: use the revocation list on disk now, unless the node already has a newer one.
    A changed CA certificate is refused: the TLS contexts verify chains against the CA loaded
    at start, so only a restart can switch."""
    current = mesh_node.transport.trust
    try:
        trust = load_trust(config)
        if trust.ca_certificate != current.ca_certificate:
            raise IdentityError(
                f"{config.ca_certificate} is not the mesh CA certificate this node started "
                f"with: restart the node to use a new CA"
            )
    except IdentityError as exc:  # a bad file must not stop a running node
        log.error(
            "could not reload the revocation list, keeping the old one: %s",
            exc,
            extra={"event": "trust_reload_failed"},
        )
        return
    if trust.crl_number < current.crl_number:
        log.warning(
            "kept revocation list %d: %s holds the older list %d (the mesh CA published a "
            "newer one; nothing needs copying any more)",
            current.crl_number,
            config.revocation_list,
            trust.crl_number,
            extra={"event": "trust_reload_older", "number": trust.crl_number},
        )
        return
    mesh_node.transport.reload_trust(trust)
    mesh_node.apply_trust(trust)
    log.info(
        "reloaded the revocation list: %d revoked certificates",
        len(trust.revoked_serials),
        extra={"event": "trust_reloaded"},
    )


def apply_policy(config: NodeConfig, steward: Steward, policy: MeshPolicy) -> None:
    """A newer mesh policy: the steward repairs by its rules from now on, each tightened by
    the node's own ``[rules.NAME]`` where those are stricter; local rules the policy does not
    know, or would loosen, are ignored (and said so)."""
    rules = tightened(policy, config.rules)
    ignored = sorted(name for name, rule in config.rules.items() if rules.get(name) != rule)
    steward.rules = rules
    if ignored:
        log.warning(
            "mesh policy %d overrides this node's rules %s: a node may only tighten the "
            "policy's rules (same k and n), not loosen or add them",
            policy.sequence,
            ", ".join(ignored),
            extra={"event": "local_rules_overridden", "rules": ignored},
        )
