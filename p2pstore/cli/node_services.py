"""The services a node runs beside its data path: bucket replicas, garbage collection (the
holder's collector and the steward's renewals of what the mesh's references keep), and the
node's watches over its disk, its certificates and the local mesh that started it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import trio

from p2pstore.cli.certificate_expiry import register_expiry_metric, warn_before_expiry
from p2pstore.cli.config import NodeConfig
from p2pstore.cli.crl_freshness import register_crl_metric, warn_while_stale
from p2pstore.cli.lifeline import watch_parent
from p2pstore.identity import TrustAnchor
from p2pstore.net.bucket_book import BucketBook
from p2pstore.net.buckets import BucketService
from p2pstore.net.collection import Collector
from p2pstore.net.dht import Dht
from p2pstore.net.fragments import FragmentService
from p2pstore.net.leases import LeaseRenewer
from p2pstore.net.metrics import NodeMetrics
from p2pstore.net.references import MeshReferences, ReferenceSettings
from p2pstore.net.scrubber import Scrubber
from p2pstore.net.steward import Steward
from p2pstore.store import DiskFragmentStore
from p2pstore.store.leases import lease_table_for


async def start_buckets(nursery: trio.Nursery, config: NodeConfig, dht: Dht) -> BucketService:
    """The bucket replicas this node holds, saved in its data directory."""
    buckets = BucketService(dht, book=BucketBook(config.data_dir, 10**6))
    await nursery.start(buckets.run)
    return buckets


def collector_for(
    config: NodeConfig,
    fragments: FragmentService,
    store: DiskFragmentStore,
    buckets: BucketService,
    steward: Steward,
) -> Collector:
    """The holder's collector, and the steward's renewals of what the mesh's references keep."""
    dht = buckets.dht
    collector = Collector(fragments, dht, lease_table_for(store), config.gc)
    recheck = min(ReferenceSettings().recheck, config.repair_check_interval)
    references = MeshReferences(dht, ReferenceSettings(recheck=recheck), buckets=buckets)
    lease = config.gc.initial_lease
    steward.renewer = LeaseRenewer(dht, references, collector=collector, ttl=lease)
    return collector


def start_watches(
    nursery: trio.Nursery,
    store: DiskFragmentStore,
    metrics: NodeMetrics,
    config: NodeConfig,
    parent_fd: int | None,
    expiries: dict[str, Callable[[], datetime]],
    trust: Callable[[], TrustAnchor],
    collector: Collector,
) -> None:
    """The node's watches over itself: its disk (scrubbing, and freeing what no lease keeps),
    its certificates' expiry, its revocation list's freshness, and the local mesh that started
    it if any."""
    nursery.start_soon(Scrubber(store, metrics, config.scrub).run)
    nursery.start_soon(collector.run)
    register_expiry_metric(metrics.registry, expiries, time.time)
    nursery.start_soon(warn_before_expiry, expiries, time.time)
    register_crl_metric(metrics.registry, trust, time.time)
    nursery.start_soon(warn_while_stale, trust, time.time)
    if parent_fd is not None:
        nursery.start_soon(watch_parent, parent_fd)
