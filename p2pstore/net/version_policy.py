"""The mesh policy's wire protocol versions, applied to a node's sessions: a session settled on
a version the policy does not allow is refused, saying which versions it allows, so an operator
retiring version 2 sees which peers still need upgrading.  Logged here, decided in
:func:`p2pstore.wire.policy_refusal`."""

from __future__ import annotations

import logging
from collections.abc import Collection

from p2pstore.net.session import Session
from p2pstore.wire import policy_refusal

log = logging.getLogger("p2pstore.node")


def version_refusal(session: Session, allowed: Collection[int] | None) -> str | None:
    """Why the policy refuses ``session``'s settled version (logged), None if it does not."""
    reason = policy_refusal(session.version, allowed)
    if reason is not None:
        log.warning(
            "refusing %s: %s",
            session.describe(),
            reason,
            extra={"event": "peer_version_refused", "peer": session.peer.node_id.hex(),
                   "version": session.version},
        )  # fmt: skip
    return reason


def warn_unspoken(allowed: Collection[int] | None, spoken: Collection[int]) -> None:
    """Say so when the policy allows none of the versions this node speaks: it can then talk
    to no peer that follows the policy."""
    if allowed and not set(allowed) & set(spoken):
        log.error(
            "the mesh policy allows wire protocol versions %s, this node speaks %s: upgrade it",
            sorted(allowed),
            sorted(spoken),
            extra={"event": "protocol_version_disallowed"},
        )
