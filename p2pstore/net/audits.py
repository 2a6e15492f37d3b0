"""Challenging holders over the network: the trio side of :mod:`p2pstore.core.audit`.

A steward drives an :class:`~p2pstore.core.audit.AuditPlanner` from its rounds: ``watch`` what
it stewards, wake at ``next_deadline()``, ``expire`` and send what is ``due`` with
:func:`challenge_holder` (one task each), which returns the planner's evidence.  Whatever the
holder does -- a bad proof, an error, garbage, silence, a dropped connection -- becomes a
verdict, never an exception: a hostile holder cannot break the steward's round.
"""

from __future__ import annotations

import trio

from p2pstore.codec.fragment_ids import AuditProof, audit_proof_error
from p2pstore.core.audit import AuditPlanner, Challenge, Evidence
from p2pstore.errors import PeerRefused, PeerUnreachable, RemoteError
from p2pstore.net.node import Node
from p2pstore.wire import AuditProofReply


def audit_reply_error(fragment_id: bytes, leaf_index: int, reply: AuditProofReply) -> str | None:
    """The planner's proof checker: why ``reply`` does not prove leaf ``leaf_index`` of the
    fragment ``fragment_id`` (None if it does)."""
    proof = AuditProof(leaf=reply.leaf, path=reply.path, length=reply.length)
    return audit_proof_error(fragment_id, leaf_index, proof)


async def challenge_holder(
    node: Node, address: str, challenge: Challenge, planner: AuditPlanner
) -> Evidence | None:
    """Send ``challenge`` to its holder at ``address``, wait until its deadline at most, and
    have ``planner`` judge the answer (None if it was judged already, e.g. by ``expire``)."""
    reply: AuditProofReply | None = None
    error: tuple[str, str] | None = None
    timeout = max(0.0, challenge.deadline - trio.current_time())
    try:
        answer = await node.call(challenge.holder, address, challenge.message, timeout=timeout)
    except RemoteError as exc:
        error = (exc.code, str(exc))
    except (PeerUnreachable, PeerRefused):
        pass  # late: no answer from the holder by the deadline
    else:
        if isinstance(answer, AuditProofReply):
            reply = answer
        else:
            error = ("bad-reply", f"answered AuditChallenge with {type(answer).__name__}")
    return planner.answered(challenge, reply, error, trio.current_time())
