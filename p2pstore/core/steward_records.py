"""Which records a steward publishes for an object, and when: the node's steward and the
simulator's count the same sends.

Strategy: a steward publishes the object's manifest once (the node's publisher renews it from
then on, :mod:`p2pstore.core.published`), and its own placement record whenever the holders it
names changed or ``placement_refresh`` has passed since it last did (receipts in it must stay
fresh).  Nothing else triggers a send, so a round that changed nothing costs no record traffic.
Pure: the driver says what it keeps published and which holders the record would name.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from p2pstore.core.protocol import PLACEMENT_REFRESH
from p2pstore.core.records import RecordKind

Named = frozenset[Hashable]
"""The holders a placement record names (the node: (holder id, position) pairs)."""


@dataclass(frozen=True, slots=True)
class _Sent:
    at: float
    named: Named


class StewardRecords:
    """The placement records one steward sent, per object key."""

    __slots__ = ("_sent", "placement_refresh")

    def __init__(self, placement_refresh: float = PLACEMENT_REFRESH) -> None:
        self.placement_refresh = placement_refresh
        self._sent: dict[bytes, _Sent] = {}

    def __contains__(self, key: object) -> bool:
        """True once a placement record was sent for ``key`` (and not forgotten since)."""
        return key in self._sent

    def due(
        self,
        key: bytes,
        named: Named,
        now: float,
        *,
        manifest_kept: bool,
        placement_kept: bool,
    ) -> tuple[RecordKind, ...]:
        """The records to publish for ``key`` at ``now``, manifest first; call :meth:`sent`
        once the placement record went out."""
        out: list[RecordKind] = [] if manifest_kept else [RecordKind.MANIFEST]
        last = self._sent.get(key)
        if (
            not placement_kept
            or last is None
            or last.named != named
            or now - last.at >= self.placement_refresh
        ):
            out.append(RecordKind.PLACEMENT)
        return tuple(out)

    def sent(self, key: bytes, named: Named, now: float) -> None:
        """The placement record naming ``named`` was published at ``now``."""
        self._sent[key] = _Sent(now, named)

    def forget(self, key: bytes) -> None:
        """No longer the object's steward."""
        self._sent.pop(key, None)
