"""``p2pstore node``: run a datacenter node from its TOML configuration."""

from __future__ import annotations

import functools
import logging
import random
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import click
import trio

from p2pstore.cli.certificate_expiry import expiries
from p2pstore.cli.config import NodeConfig, load_node_config
from p2pstore.cli.logs import configure_logging
from p2pstore.cli.node_identity import init
from p2pstore.cli.node_services import collector_for, start_buckets, start_watches
from p2pstore.cli.node_state import keep_state_saved, load_saved_contacts, restore_records
from p2pstore.cli.node_status import status
from p2pstore.cli.node_trust import apply_policy, load_starting_trust, reload_on_sighup
from p2pstore.core.contact import Contact
from p2pstore.core.rules import parse_duration
from p2pstore.errors import ConfigError, PeerUnreachable
from p2pstore.identity import NodeCredentials, TrustAnchor, short_id
from p2pstore.net.address import parse_address
from p2pstore.net.admin import AdminServer, node_pages
from p2pstore.net.contact_book import ContactBook, contacts_worth_saving
from p2pstore.net.departure import Departure, DrainOutcome
from p2pstore.net.dht import Dht
from p2pstore.net.fragments import FragmentService
from p2pstore.net.mesh_trust import MeshTrust
from p2pstore.net.metrics import NodeMetrics
from p2pstore.net.node import Node
from p2pstore.net.record_book import RecordBook
from p2pstore.net.refusals import RefusalLog
from p2pstore.net.steward import Steward, StewardSettings
from p2pstore.net.tls import TlsTransport
from p2pstore.store import DiskFragmentStore

log = logging.getLogger("p2pstore.node")


@click.group()
def node() -> None:
    """Create a node's key and certificate request, run the node, and ask a running one for
    its status."""


node.add_command(status)
node.add_command(init)


@node.command("run")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's TOML file.",
)
@click.option(
    "--parent-fd",
    type=int,
    hidden=True,
    help="Stop when this inherited pipe reaches end-of-file (local meshes: see cli/lifeline.py).",
)
def run(config_path: Path, parent_fd: int | None) -> None:
    """Run a node until SIGINT or SIGTERM; SIGHUP reloads the revocation list.

    The node listens for peers over mutual TLS, joins the mesh's DHT through the peers of
    [bootstrap] (and its seed file), retrying while none answers, and announces itself.
    See bootstrap/node.toml for every key of the configuration and bootstrap/README.md for
    the operator's guide.
    """
    config = load_node_config(config_path)
    configure_logging(config.log_level, config.log_format)
    # While the node runs, trio's signal receiver turns SIGINT/SIGTERM into a clean stop.  Outside
    # it (startup, the last moments of a stop) a SIGTERM is only recorded, never fatal: a Ctrl-C
    # in a terminal reaches every node of a local mesh at once, and the mesh's own SIGTERM may
    # follow while a node is already stopping.  The handler must not raise: trio re-delivers a
    # signal still pending when its receiver closes by calling this handler from inside trio.
    early = EarlyStop()
    signal.signal(signal.SIGTERM, early)
    stopped = trio.Event()
    try:
        trio.run(functools.partial(serve_node, config, stopped, early, parent_fd=parent_fd))
        _ignore_stop_signals()
    except KeyboardInterrupt:
        _ignore_stop_signals()
        if not stopped.is_set():
            log.warning("interrupted before the node was running", extra={"event": "interrupted"})
            sys.exit(130)


@node.command("drain")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's TOML file (the same one `node run` uses).",
)
@click.option(
    "--deadline",
    default="2h",
    show_default=True,
    help="Longest wait for stewards to move every fragment (e.g. 90m, 2h, 3600).",
)
def drain(config_path: Path, deadline: str) -> None:
    """Move this node's fragments to other nodes the coding rules allow, then stop.

    Stop the daemon first (e.g. `systemctl stop p2pstore-node`): drain runs the node itself,
    with the same identity, store and address.  It refuses new fragments and tells each
    object's steward it is leaving; stewards copy its fragments to new holders at their next
    round ([repair] check_interval), publish the new placement and release them here.  Exit
    status 0 when the store is empty, 3 when fragments are left at the deadline (orphans no
    steward claims, or objects whose steward is unreachable: run drain again or stop anyway;
    stewards rebuild them after the grace period).
    """
    config = load_node_config(config_path)
    configure_logging(config.log_level, config.log_format)
    try:
        seconds = parse_duration(deadline)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--deadline") from exc
    outcome: list[DrainOutcome] = []
    early = EarlyStop()
    signal.signal(signal.SIGTERM, early)
    try:
        trio.run(
            functools.partial(
                serve_node, config, None, early, leave_within=seconds, drained=outcome
            )
        )
    finally:
        _ignore_stop_signals()
    if not outcome:
        click.echo("drain interrupted before it finished; the node is stopped", err=True)
        sys.exit(1)
    done = outcome[0]
    click.echo(
        f"drained: {done.released} of {done.started_with} fragments moved to other nodes, "
        f"{done.left} left, in {done.seconds:.0f}s"
    )
    sys.exit(0 if done.complete else 3)


class EarlyStop:
    """A SIGTERM handler for the moments trio's receiver is not open: it records the request."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


def _ignore_stop_signals() -> None:
    """The node has stopped: further stop signals must not change how the process exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _prepare_data_dir(config: NodeConfig) -> None:
    try:
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{config.path}: [node] data_dir: cannot create {config.data_dir}: {exc.strerror}"
        ) from exc
    # A data directory that refuses writes is not refused here: the store then opens read-only,
    # serves what it holds and says why it refuses writes (a full or read-only disk).


async def serve_node(
    config: NodeConfig,
    stopped: trio.Event | None = None,
    early: EarlyStop | None = None,
    *,
    leave_within: float | None = None,
    drained: list[DrainOutcome] | None = None,
    parent_fd: int | None = None,
) -> None:
    """The daemon: start the node, then wait for signals; returns after a clean stop.  With
    ``leave_within`` seconds it drains instead (see ``p2pstore node drain``), appending the
    outcome to ``drained``, and stops when done.  With ``parent_fd`` it also stops when that
    inherited pipe closes (the local mesh that started it died)."""
    _prepare_data_dir(config)
    credentials = NodeCredentials.load(config.key, config.certificate)
    trust = load_starting_trust(config)
    host, port = parse_address(config.listen)
    transport, mesh_node = _mesh_node(config, credentials, trust, host, port)
    metrics = mesh_node.metrics
    store = _open_store(config)
    fragments = FragmentService(mesh_node, store)
    dht = Dht(
        mesh_node,
        lambda: transport.trust,
        rng=random.Random(),  # noqa: S311 - picks bucket-refresh targets, not secrets
        wall_clock=time.time,
    )
    book = ContactBook(config.data_dir)
    saved = load_saved_contacts(book)
    records = RecordBook(config.data_dir, dht.settings.max_records, dht.settings.max_record_bytes)
    restore_records(records, dht)
    identity = credentials.identity
    log.info(
        "starting node %s (%s, %s), %d revoked certificates known",
        short_id(identity.node_id),
        identity.datacenter,
        identity.region,
        len(trust.revoked_serials),
        extra={"event": "starting"},
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(mesh_node.run)
            await nursery.start(dht.run)
            buckets = await start_buckets(nursery, config, dht)
            steward = Steward(
                dht,
                config.rules,
                store=store,
                settings=StewardSettings(
                    check_interval=config.repair_check_interval, audits=config.audits
                ),
            )  # its audits draw from random.SystemRandom(): holders cannot predict them
            if config.metrics_listen is not None:
                admin_host, admin_port = parse_address(config.metrics_listen)
                pages = node_pages(mesh_node, dht, store, steward.auditor.status)
                admin = AdminServer(pages, admin_host, admin_port)
                await nursery.start(admin.run)
            trusting = MeshTrust(
                dht,
                interval=config.trust_refresh,
                on_policy=functools.partial(apply_policy, config, steward),
            )  # hears peers from now on
            nursery.start_soon(_join_and_announce, config, dht, store, saved, trusting)
            nursery.start_soon(keep_state_saved, book, records, dht)
            start_watches(
                nursery,
                store,
                metrics,
                config,
                parent_fd,
                expiries(mesh_node, trust),
                lambda: transport.trust,
                collector_for(config, fragments, store, buckets, steward),
            )
            await nursery.start(steward.run)
            if leave_within is not None:
                leaving = Departure(fragments, steward)
                nursery.start_soon(_leave, leaving, leave_within, drained, nursery.cancel_scope)
            async for signum in _with_early_stop(signals, early):
                if signum == signal.SIGHUP:
                    reload_on_sighup(config, mesh_node)
                    continue
                log.info(
                    "received %s: stopping",
                    signal.Signals(signum).name,
                    extra={"event": "stopping"},
                )
                with trio.move_on_after(mesh_node.settings.stop_timeout):
                    await fragments.drain()  # accepted writes finish and are answered first
                await mesh_node.stop()  # then goodbyes, bounded
                nursery.cancel_scope.cancel()  # then the DHT and the announcer
                break
        # Still inside the receiver: a second stop signal (a terminal's Ctrl-C reaches every
        # process of a local mesh, which then sends its own SIGTERM) is absorbed, not fatal.
        await book.save_logged(contacts_worth_saving(dht.table), in_thread=False)
        await records.save_logged(dht.store, dht.wall_clock(), in_thread=False, level=logging.INFO)
        store.close()
        log.info("node stopped", extra={"event": "stopped"})
        if stopped is not None:
            stopped.set()


async def _leave(
    departure: Departure,
    within: float,
    drained: list[DrainOutcome] | None,
    scope: trio.CancelScope,
) -> None:
    """Drain (the outcome appended to ``drained``), then stop the node as a stop signal would
    (accepted writes first)."""
    outcome = await departure.drain(within)
    if drained is not None:
        drained.append(outcome)
    fragments = departure.service
    with trio.move_on_after(fragments.node.settings.stop_timeout):
        await fragments.drain()
    await fragments.node.stop("node left the mesh")
    scope.cancel()


JOIN_RETRY_INITIAL = 1.0
JOIN_RETRY_MAX = 60.0


def _open_store(config: NodeConfig) -> DiskFragmentStore:
    """The fragment store in the data directory; its quota is the configured one, or 90% of
    the free space at start."""
    quota = config.quota_bytes
    if quota is None:
        quota = max(1, int(shutil.disk_usage(config.data_dir).free * DEFAULT_QUOTA_SHARE))
    identity_quota = config.fragment_bytes_per_identity.of(quota)
    store = DiskFragmentStore(config.data_dir, quota, identity_quota=identity_quota)
    usage = store.usage()
    room = usage.bytes_used + shutil.disk_usage(config.data_dir).free
    if config.quota_bytes is not None and config.quota_bytes > room:
        log.warning(
            "[store] quota is %d bytes but the disk of %s has room for %d (fragments held "
            "plus free space): the node will accept fragments until the disk is full, then "
            "refuse writes; lower the quota",
            config.quota_bytes, config.data_dir, room,
            extra={"event": "quota_exceeds_disk", "quota_bytes": config.quota_bytes,
                   "room_bytes": room},
        )  # fmt: skip
    log.info(
        "fragment store: %d fragments, %d of %d bytes used (at most %d per uploading "
        "identity)%s; recovery: %s",
        usage.fragments, usage.bytes_used, usage.quota_bytes, identity_quota,
        "" if usage.writable else f"; NOT WRITABLE: {usage.reason}",
        store.recovered,
        extra={"event": "store_opened", "fragments": usage.fragments,
               "bytes_used": usage.bytes_used, "quota_bytes": usage.quota_bytes,
               "identity_quota_bytes": identity_quota, "writable": usage.writable},
    )  # fmt: skip
    return store


DEFAULT_QUOTA_SHARE = 0.9


def _mesh_node(
    config: NodeConfig, credentials: NodeCredentials, trust: TrustAnchor, host: str, port: int
) -> tuple[TlsTransport, Node]:
    """The transport and node of ``config``, with its ``[limits]`` and one refusal log (so a
    peer refused by either is logged once per interval and counted in the same metrics)."""
    metrics = NodeMetrics()
    _add_process_metrics(metrics)
    refusals = RefusalLog(metrics.record_refusal)
    transport = TlsTransport(
        credentials,
        trust,
        str(config.ca_certificate),
        listen_host=host,
        listen_port=port,
        settings=config.limits.transport,
        refusals=refusals,
    )
    metrics.watch_limits(transport.levels)
    mesh_node = Node(
        credentials,
        transport,
        advertise=config.advertise,
        metrics=metrics,
        settings=config.limits.node,
        refusals=refusals,
    )
    return transport, mesh_node


def _add_process_metrics(metrics: NodeMetrics) -> None:
    """The daemon's process figures (CPU, memory, open files, GC) beside the node's own."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    ProcessCollector(registry=metrics.registry)
    PlatformCollector(registry=metrics.registry)
    GCCollector(registry=metrics.registry)


async def _join_and_announce(
    config: NodeConfig,
    dht: Dht,
    store: DiskFragmentStore,
    saved: list[Contact],
    mesh_trust: MeshTrust,
) -> None:
    """Join the mesh through the bootstrap peers and the contacts saved by the last run,
    retrying with backoff while none answers, then fetch the CA's newest revocation list,
    announce this node (the DHT keeps the announcement fresh) and keep the list fresh."""
    delay = JOIN_RETRY_INITIAL
    while True:
        try:
            seeds = config.join_through()
            await dht.join(
                [seed.address for seed in seeds],
                {seed.address: seed.node_id for seed in seeds if seed.node_id is not None},
                known=saved,
            )
            break
        except PeerUnreachable as exc:
            # Peers still starting (a whole mesh rebooting) are normal for a minute; an
            # operator's alert fires once the backoff is at its longest.
            log.log(
                logging.ERROR if delay >= JOIN_RETRY_MAX else logging.WARNING,
                "could not join the mesh, retrying in %gs: %s",
                delay,
                exc,
                extra={"event": "join_failed"},
            )
        await trio.sleep(delay)
        delay = min(2 * delay, JOIN_RETRY_MAX)
    await mesh_trust.refresh()
    # Once: the DHT's publisher sends it again when due, with the free space it has then.
    stored = await dht.announce(lambda: store.usage().free_bytes)
    log.info(
        "announced this node to %d peers",
        stored,
        extra={"event": "announced", "stored_on": stored},
    )
    await mesh_trust.run()


async def _with_early_stop(
    signals: AsyncIterator[int], early: EarlyStop | None
) -> AsyncIterator[int]:
    """The signals received, preceded by a SIGTERM that came before the receiver was open."""
    if early is not None and early.requested:
        yield signal.SIGTERM
    async for signum in signals:
        yield signum
