"""Storage audits: which holder to challenge next, and what its answer proves.

Strategy (sans-IO, like :class:`~p2pstore.core.repair_plan.FailureDetector`): a steward tells
the :class:`AuditPlanner` which fragments it watches on which holders (:meth:`watch`); the
planner says which challenges are due (:meth:`due`) and when it next wants to be woken
(:meth:`next_deadline`); the driver sends them and hands back each answer (:meth:`answered`) or
reports silence (:meth:`expire`), and gets an :class:`Evidence` record for each: the challenge,
a digest of the answer, the times and a :class:`AuditVerdict`.  Nothing here reads a clock or
global randomness: ``now`` and the rng come in, and the rng must be one the holder cannot
predict (``random.SystemRandom()`` in a node; a seeded ``Random`` in tests and the simulator).

What a holder cannot predict: when it is challenged (each holder's challenges form a Poisson
process), which of its fragments (uniform), which leaf (uniform) and the nonce.  So a holder
that kept a share s of its fragments passes one audit with probability about s, and one that
kept none fails the first.  Any answer but a valid proof -- a wrong proof, "not found", another
error, or none by the deadline -- fails: the verdicts say which, the steward decides what a
failure costs (the issue: the fragment counts lost at once).  Audit only holders the failure
detector thinks alive: a holder that is down is the grace period's business.  The steward
tells the planner what it concluded: :meth:`drop` a fragment counted lost (or a holder fallen
silent), :meth:`hasten` the next challenge of a holder caught failing, so a holder that kept
nothing loses every fragment in as many answers, not one per interval.

Rate: each holder is challenged at ``max(min_per_holder_per_hour / 3600, fraction_per_day *
(fragments watched on it) / 86400)`` per second, at most one challenge outstanding per holder.
At the defaults (2% of the fragments a day, at least 4 audits an hour per holder) one stored TiB
of 1 MiB fragments (4 MiB chunks, 4-of-8) costs 20,972 audits a day: 16,674 bytes each on the
wire (a 52-byte challenge, a 16,614-byte answer: 16 KiB leaf, 6 hashes; frame headers), so
~350 MB a day, 0.03% of what is stored, ~4 KB/s; and the holders read ~20.5 GiB a day from disk
to answer (a whole fragment per answer: the path needs every leaf's hash), i.e. a pass over the
data every 50 days.  The floor adds 96 audits (~1.6 MB) a day per (steward, holder) pair.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from p2pstore.errors import REMOTE_ERRORS, FragmentNotFound, IntegrityError
from p2pstore.wire.audit import MAX_AUDIT_LEAF, MAX_NONCE, AuditChallenge, AuditProofReply

DAY = 86_400.0
HOUR = 3_600.0

ProofChecker = Callable[[bytes, int, AuditProofReply], str | None]
"""(fragment id, leaf index, answer) -> why the answer does not prove the leaf, or None.
A node passes :func:`p2pstore.net.fragments.audit_reply_error` (core cannot import codec)."""


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """How often a steward audits; see the module docstring for what the defaults cost."""

    fraction_per_day: float = 0.02
    """Share of the fragments watched on a holder audited per day (each fragment about every
    50 days at the default)."""
    min_per_holder_per_hour: float = 4.0
    """A holder of a few fragments is still audited this often (a total liar is caught in about
    15 minutes by each steward that watches it)."""
    answer_timeout: float = 20.0
    """Seconds a holder has to answer (read a fragment, hash it twice) before it is late."""

    def __post_init__(self) -> None:
        for name in ("fraction_per_day", "min_per_holder_per_hour", "answer_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"audit {name} must be a finite number >= 0, got {value!r}")
        if self.answer_timeout <= 0:
            raise ValueError("audit answer_timeout must be > 0")

    def rate(self, fragments: int) -> float:
        """Audits per second of a holder on which ``fragments`` are watched."""
        return max(self.min_per_holder_per_hour / HOUR, self.fraction_per_day * fragments / DAY)


@dataclass(frozen=True, slots=True, order=True)
class WatchedFragment:
    """A fragment the steward expects ``holder`` to keep; ``length`` is its size in bytes
    (from the manifest), which fixes how many leaves it has."""

    holder: bytes
    fragment_id: bytes
    length: int

    def __post_init__(self) -> None:
        if type(self.length) is not int or self.length < 0:
            raise ValueError(f"a fragment's length is an int >= 0, got {self.length!r}")

    @property
    def leaves(self) -> int:
        return max(1, -(-self.length // MAX_AUDIT_LEAF))


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge sent (or to send) to ``holder``; :attr:`message` is what goes on the wire."""

    holder: bytes
    fragment_id: bytes
    leaf_index: int
    nonce: int
    sent_at: float
    deadline: float

    @property
    def message(self) -> AuditChallenge:
        return AuditChallenge(
            fragment_id=self.fragment_id, leaf_index=self.leaf_index, nonce=self.nonce
        )


class AuditVerdict(enum.Enum):
    PASSED = "passed"
    WRONG_PROOF = "wrong-proof"
    """It answered with a proof that does not lead to the fragment's id (or another nonce)."""
    MISSING = "missing"
    """It said it does not have the fragment (FragmentNotFound), or its copy was corrupt."""
    REFUSED = "refused"
    """It answered with another error (busy, stopping, ...): no proof is no proof."""
    LATE = "late"
    """No answer by the deadline (timeout, or the connection failed)."""

    @property
    def failed(self) -> bool:
        return self is not AuditVerdict.PASSED


MISSING_CODES = frozenset(
    code
    for code, kind in REMOTE_ERRORS.items()
    if issubclass(kind, (FragmentNotFound, IntegrityError))
)
MAX_HOLDERS_REMEMBERED = 4096
"""Holders whose counts a planner keeps (certified members, so this bounds only how long the
counts of holders gone from the mesh are kept)."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """What an operator needs to judge a holder: the challenge, the answer's digest, when."""

    challenge: Challenge
    verdict: AuditVerdict
    answered_at: float | None
    answer_digest: bytes | None
    """SHA-256 of the answer (proof fields, or the error's code and text); None if none came."""
    reason: str

    def log_fields(self) -> dict[str, object]:
        """The evidence as flat JSON-able fields for a log line."""
        c = self.challenge
        return {
            "holder": c.holder.hex(),
            "fragment": c.fragment_id.hex(),
            "leaf": c.leaf_index,
            "nonce": c.nonce,
            "sent_at": c.sent_at,
            "deadline": c.deadline,
            "answered_at": self.answered_at,
            "answer_sha256": None if self.answer_digest is None else self.answer_digest.hex(),
            "verdict": self.verdict.value,
            "reason": self.reason,
        }


@dataclass(slots=True)
class HolderAudits:
    """Running counts for one holder (for metrics and ``stat``)."""

    passed: int = 0
    failed: int = 0
    last: Evidence | None = None


@dataclass(slots=True)
class _Holder:
    fragments: list[WatchedFragment] = field(default_factory=list)
    due_at: float = math.inf
    pending: Challenge | None = None


class AuditPlanner:
    """Plans and judges the audits of one steward (see the module docstring)."""

    def __init__(
        self, settings: AuditSettings, rng: random.Random, check_proof: ProofChecker
    ) -> None:
        self.settings = settings
        self._rng = rng
        self._check = check_proof
        self._holders: dict[bytes, _Holder] = {}
        self._results: dict[bytes, HolderAudits] = {}

    # --- what to audit ----------------------------------------------------------------------

    def watch(self, fragments: Iterable[WatchedFragment], now: float) -> None:
        """Replace what is watched with ``fragments`` (a steward's round: every fragment of its
        objects on every holder it believes alive).  A holder new to the planner gets its first
        challenge at a random time; a holder no longer watched is dropped, except its
        outstanding challenge, which is still judged."""
        grouped: dict[bytes, list[WatchedFragment]] = {}
        for fragment in sorted(set(fragments)):  # sorted: the rng's draws do not depend on order
            grouped.setdefault(fragment.holder, []).append(fragment)
        for holder, state in list(self._holders.items()):
            if holder not in grouped:
                if state.pending is None:
                    del self._holders[holder]
                else:
                    state.fragments, state.due_at = [], math.inf
        for holder, watched in grouped.items():
            state = self._holders.setdefault(holder, _Holder())
            was_idle = not state.fragments
            state.fragments = watched
            if was_idle:
                state.due_at = now + self._interval(len(watched))

    def drop(self, holder: bytes, fragment_id: bytes | None = None) -> None:
        """Stop watching one fragment of ``holder`` (counted lost: nothing left to prove), or
        all of them (it fell silent: the grace period's business until the next
        :meth:`watch`); an outstanding challenge is still judged."""
        state = self._holders.get(holder)
        if state is None:
            return
        if fragment_id is None:
            state.fragments = []
        else:
            state.fragments = [f for f in state.fragments if f.fragment_id != fragment_id]
        if not state.fragments:
            state.due_at = math.inf
            if state.pending is None:
                del self._holders[holder]

    def hasten(self, holder: bytes, now: float) -> None:
        """Make ``holder``'s next challenge due at ``now`` (a steward that caught it failing
        walks its other fragments at once; ``check`` audits every holder once)."""
        state = self._holders.get(holder)
        if state is not None and state.fragments:
            state.due_at = min(state.due_at, now)

    def due(self, now: float, limit: int | None = None) -> list[Challenge]:
        """The challenges to send now (at most one outstanding per holder, at most ``limit``,
        the longest due first); each is then outstanding until :meth:`answered` or
        :meth:`expire` judges it."""
        ready = [
            holder
            for holder, state in self._holders.items()
            if state.pending is None and state.fragments and state.due_at <= now
        ]
        if limit is not None:
            ready = sorted(ready, key=lambda h: (self._holders[h].due_at, h))[: max(0, limit)]
        challenges = []
        for holder in sorted(ready):
            state = self._holders[holder]
            fragment = state.fragments[self._rng.randrange(len(state.fragments))]
            challenge = Challenge(
                holder=holder,
                fragment_id=fragment.fragment_id,
                leaf_index=self._rng.randrange(fragment.leaves),
                nonce=self._rng.randint(0, MAX_NONCE),
                sent_at=now,
                deadline=now + self.settings.answer_timeout,
            )
            state.pending = challenge
            state.due_at = now + self._interval(len(state.fragments))
            challenges.append(challenge)
        return challenges

    def next_deadline(self) -> float | None:
        """When :meth:`due` or :meth:`expire` next has something to do (None: nothing watched)."""
        times = [
            state.pending.deadline if state.pending is not None else state.due_at
            for state in self._holders.values()
        ]
        finite = [t for t in times if t != math.inf]
        return min(finite) if finite else None

    # --- judging ----------------------------------------------------------------------------

    def answered(
        self,
        challenge: Challenge,
        reply: AuditProofReply | None,
        error: tuple[str, str] | None,
        now: float,
    ) -> Evidence | None:
        """Judge what ``challenge.holder`` answered: ``reply`` (a proof), or ``error`` (the
        ``(code, message)`` of its ErrorReply), or neither (the call failed or timed out).
        Returns None if the challenge is not outstanding (already judged)."""
        state = self._holders.get(challenge.holder)
        if state is None or state.pending != challenge:
            return None
        if reply is None and error is None:
            return self._judge(state, _late(challenge))
        if reply is not None:
            digest = _digest_reply(reply)
            late_by = now - challenge.deadline
            if late_by > 0:
                verdict, reason = AuditVerdict.LATE, f"answered {late_by:.1f} s after the deadline"
            elif reply.nonce != challenge.nonce:
                verdict, reason = AuditVerdict.WRONG_PROOF, "the answer names another challenge"
            elif (why := self._check(challenge.fragment_id, challenge.leaf_index, reply)) is None:
                verdict, reason = AuditVerdict.PASSED, "the proof leads to the fragment's id"
            else:
                verdict, reason = AuditVerdict.WRONG_PROOF, why
        else:
            assert error is not None
            code, text = error
            digest = hashlib.sha256(f"{code}\0{text}".encode()).digest()
            verdict = AuditVerdict.MISSING if code in MISSING_CODES else AuditVerdict.REFUSED
            reason = f"{code}: {text}"[:200]
        return self._judge(state, Evidence(challenge, verdict, now, digest, reason))

    def withdraw(self, challenge: Challenge) -> bool:
        """Forget an outstanding ``challenge`` that never reached its holder (it could not
        be dialled: down, which is the grace period's business), with no verdict; returns
        whether it was outstanding.  Only a challenge that was not sent may be withdrawn: one
        the holder received is judged, whatever happens to the connection after."""
        state = self._holders.get(challenge.holder)
        if state is None or state.pending != challenge:
            return False
        state.pending = None
        if not state.fragments:
            del self._holders[challenge.holder]
        return True

    def expire(self, now: float) -> list[Evidence]:
        """Judge every outstanding challenge past its deadline as late."""
        late = []
        for holder in sorted(self._holders):
            state = self._holders[holder]
            if state.pending is not None and state.pending.deadline <= now:
                late.append(self._judge(state, _late(state.pending)))
        return late

    def results(self, holder: bytes) -> HolderAudits:
        """Counts for ``holder`` so far (zeros for one never audited)."""
        return self._results.get(holder, HolderAudits())

    def audited(self) -> dict[bytes, HolderAudits]:
        """Counts of every holder audited so far (a copy, for metrics and status pages)."""
        return {
            holder: HolderAudits(c.passed, c.failed, c.last)
            for holder, c in sorted(self._results.items())
        }

    def watched(self, holder: bytes) -> int:
        """Fragments watched on ``holder`` now."""
        state = self._holders.get(holder)
        return 0 if state is None else len(state.fragments)

    def outstanding(self) -> list[Challenge]:
        """The challenges sent and not yet judged."""
        return [s.pending for _, s in sorted(self._holders.items()) if s.pending is not None]

    def _judge(self, state: _Holder, evidence: Evidence) -> Evidence:
        state.pending = None
        holder = evidence.challenge.holder
        if not state.fragments:
            del self._holders[holder]
        if holder not in self._results and len(self._results) >= MAX_HOLDERS_REMEMBERED:
            self._forget_one()
        counts = self._results.setdefault(holder, HolderAudits())
        if evidence.verdict.failed:
            counts.failed += 1
        else:
            counts.passed += 1
        counts.last = evidence
        return evidence

    def _forget_one(self) -> None:
        """Forget the counts of the holder not watched now whose last audit is oldest (or,
        if every one is watched, of the oldest)."""

        def age(holder: bytes) -> tuple[bool, float]:
            last = self._results[holder].last
            return (holder in self._holders, -math.inf if last is None else last.challenge.sent_at)

        del self._results[min(self._results, key=age)]

    def _interval(self, fragments: int) -> float:
        rate = self.settings.rate(fragments)
        return math.inf if rate <= 0 else self._rng.expovariate(rate)


def _late(challenge: Challenge) -> Evidence:
    return Evidence(challenge, AuditVerdict.LATE, None, None, "no answer by the deadline")


def _digest_reply(reply: AuditProofReply) -> bytes:
    digest = hashlib.sha256()
    digest.update(reply.nonce.to_bytes(8, "big") + reply.length.to_bytes(8, "big"))
    digest.update(len(reply.path).to_bytes(1, "big") + b"".join(reply.path))
    digest.update(reply.leaf)
    return digest.digest()
