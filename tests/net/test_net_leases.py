"""Stewards renew the leases of referenced objects and stop once the references go: the space
is then freed on every holder within the lease and grace periods, on both transports; an
object named twice (convergent put) lives until both names are gone."""

from __future__ import annotations

import random

import trio
from test_net_client import put_bytes
from test_net_collection import QUIET, gc_settings, held, sweep_all, with_collectors

from p2pstore.core.leases import Retention
from p2pstore.core.references import Liveness
from p2pstore.net.leases import LeaseRenewer
from p2pstore.net.steward import StewardSettings
from p2pstore.testing.storage_mesh import StorageMesh


class Names:
    """A reference source standing in for the bucket index: object id -> live names."""

    def __init__(self) -> None:
        self.names: dict[bytes, set[str]] = {}

    async def liveness(
        self, object_id: bytes, now: float, *, publish: bool = True
    ) -> Liveness | None:
        await trio.lowlevel.checkpoint()
        names = self.names.get(object_id)
        if names is None:
            return None
        return Liveness(bool(names), Retention(), "test")

    def proofs(self, object_id: bytes) -> list:
        return []


def timings(net, settings) -> tuple[StewardSettings, float]:
    """Steward rounds well inside a lease; the lease the stewards grant."""
    if net.kind == "memory":
        return StewardSettings(check_interval=1200.0, query_timeout=2.0), settings.initial_lease
    return StewardSettings(check_interval=0.5, query_timeout=2.0), 3.0


async def test_space_is_freed_once_the_last_name_goes(net, clock):
    settings = gc_settings(net)
    steward_settings, ttl = timings(net, settings)
    mesh = StorageMesh(net, 6, steward=steward_settings, dht=QUIET)
    collectors = with_collectors(mesh, settings)
    names = Names()
    for member, collector in zip(mesh.nodes, collectors, strict=True):
        member.steward.renewer = LeaseRenewer(member.dht, names, collector=collector, ttl=ttl)
    cycle = settings.initial_lease + settings.grace_period
    async with trio.open_nursery() as nursery:
        await mesh.start(nursery)
        client = await mesh.client(nursery)
        kept = await put_bytes(client, random.Random(8).randbytes(60_000))
        data = random.Random(9).randbytes(60_000)
        twice = await put_bytes(client, data, convergence_secret=b"s" * 32)
        again = await put_bytes(client, data, convergence_secret=b"s" * 32)
        assert again.verify_cap.object_id == twice.verify_cap.object_id  # deduplicated
        names.names[kept.verify_cap.object_id] = {"kept.txt"}
        names.names[twice.verify_cap.object_id] = {"a.txt", "b.txt"}
        total = sum(len(ids) for ids in held(mesh).values())
        assert total == 12
        await trio.sleep(2 * cycle)
        assert await sweep_all(collectors) == 0, "a referenced object lost fragments"
        names.names[twice.verify_cap.object_id].discard("a.txt")
        await trio.sleep(2 * cycle)
        assert await sweep_all(collectors) == 0, "freed while one name is left"
        names.names[twice.verify_cap.object_id].clear()
        deleted_at = trio.current_time()
        await trio.sleep(ttl + settings.grace_period + 2 * steward_settings.check_interval + 1)
        assert await sweep_all(collectors) == 6
        assert (
            trio.current_time() - deleted_at
            <= ttl + settings.grace_period + 3 * steward_settings.check_interval + 2
        )
        left = held(mesh)
        assert sum(len(ids) for ids in left.values()) == 6
        placed = {f for row in kept.manifest.chunks for f in row.fragment_ids}
        assert {f for ids in left.values() for f in ids} == placed
        nursery.cancel_scope.cancel()
