"""Build the aiohttp application from injected dependencies, and wire a whole service.

`build_app` takes a ready Controller and TokenAuth (tests build them against the emulated
cluster); `create_service` wires everything from a loaded configuration and an API client,
as `gatekeeper serve` does. Background work (the control loop, notifications, the Lease)
runs in named, guarded tasks that start and stop with the application. On shutdown the
controller stops first and waits for in-flight actions, then the rest is cancelled.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from aiohttp.abc import AbstractResolver
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from gatekeeper import kubeclient
from gatekeeper.config import Config, LoadedConfig, ServerConfig
from gatekeeper.drivers import Driver, Drivers
from gatekeeper.drivers.load import LoadDriver, StaticResolver
from gatekeeper.drivers.testjob import TestJobDriver
from gatekeeper.drivers.traffic import MirroringDriver
from gatekeeper.evaluating import Evaluator
from gatekeeper.leadership import Leadership
from gatekeeper.metrics import Recorder
from gatekeeper.operations import Operations
from gatekeeper.outcomes import OutcomeBoard
from gatekeeper.service.api import add_routes
from gatekeeper.service.auth import TokenAuth, TokenReviewer
from gatekeeper.service.connections import (
    CONNECTIONS,
    ConnectionBook,
    Listener,
    connections_middleware,
)
from gatekeeper.service.context import SERVICES, Services
from gatekeeper.service.controller import Controller
from gatekeeper.service.dedupe import AlertDeduper
from gatekeeper.service.dispatch import LeaderView
from gatekeeper.service.forwarding import Forwarder
from gatekeeper.service.longpoll import LongPolls
from gatekeeper.service.notifications import Notifier, Receiver, load_receivers
from gatekeeper.service.pairwatch import PairWatch
from gatekeeper.service.responses import error_middleware
from gatekeeper.sharding import ShardLeases, member_address
from gatekeeper.sources.base import Source
from gatekeeper.sources.factory import build_sources, close_sources, pair_drivers
from gatekeeper.tasks import CoroFactory, Tasks
from gatekeeper.watching import PODS, Watcher, WatchSettings

__all__ = ["Service", "build_app", "create_service", "make_runner", "serving"]

log = structlog.get_logger(__name__)

ACTION_CONNECTIONS = 32
"""Connections of the pool that actions (flips, rollbacks, scaling, state writes) use."""
LEASE_CONNECTIONS = 2
"""Connections of the Lease's own pool (one renewal at a time, one spare)."""
SHUTDOWN_DEADLINE = 25.0
"""Seconds to let in-flight actions finish on SIGTERM (Kubernetes waits 30 by default)."""


def build_app(
    controller: Controller,
    auth: TokenAuth,
    *,
    background: dict[str, CoroFactory] | None = None,
    notifier: Notifier | None = None,
    run_loop: bool = True,
    shutdown_deadline: float = SHUTDOWN_DEADLINE,
) -> web.Application:
    """The aiohttp application; `run_loop=False` leaves ticking to the caller (tests)."""
    config = controller.config
    app = web.Application(
        middlewares=[connections_middleware, error_middleware],
        client_max_size=max(config.webhook.max_body_bytes, 64 * 1024),
    )
    cooldown = max(p.cooldown for p in [config.policy, *(q.policy for q in config.pairs
                                                         if q.policy is not None)])
    app[CONNECTIONS] = ConnectionBook()
    long_polls = LongPolls(controller.wait_tick,
                           on_change=controller.recorder.long_polls.set)
    forwarder = Forwarder(controller, timeout=config.sharding.forward_timeout)
    app[SERVICES] = Services(controller=controller, auth=auth,
                             deduper=AlertDeduper(ttl=max(3600.0, cooldown)),
                             long_polls=long_polls, forwarder=forwarder)
    add_routes(app)
    tasks: dict[str, CoroFactory] = dict(background or {})
    tasks["long-polls"] = long_polls.run
    if run_loop:
        tasks["controller"] = controller.run
    if notifier is not None and notifier.enabled:
        tasks["notifications"] = notifier.run

    async def lifespan(_app: web.Application) -> AsyncIterator[None]:
        group = Tasks(name="gatekeeper", shutdown_timeout=5.0)
        for name, factory in tasks.items():
            group.start(name, factory)
        if not auth.configured:
            log.warning("no API token configured: POST endpoints answer 401")
        try:
            yield
        finally:
            await controller.close(shutdown_deadline)
            if notifier is not None:
                await notifier.drain(3.0)
            await group.close()
            await forwarder.close()

    async def stop_acting(_app: web.Application) -> None:
        controller.stop_acting()

    app.on_shutdown.append(stop_acting)  # before in-flight requests are awaited
    app.cleanup_ctx.append(lifespan)
    return app


def make_runner(app: web.Application, settings: ServerConfig | None = None) -> web.AppRunner:
    """The runner `gatekeeper serve` listens with (tests use it to serve as production does).

    Handler cancellation stays off (aiohttp's default): a client that hangs up must not cut
    an action's bookkeeping in half; long-polls end on disconnect by themselves (longpoll).
    There is no access log: request lines may carry tokens in query strings.
    """
    settings = settings or ServerConfig()
    return web.AppRunner(app, handle_signals=False, access_log=None,
                         handler_cancellation=False,
                         keepalive_timeout=settings.keepalive_timeout)


@contextlib.asynccontextmanager
async def serving(app: web.Application, settings: ServerConfig, *, host: str, port: int,
                  recorder: Recorder | None = None, descriptors: int | None = None
                  ) -> AsyncIterator[Listener]:
    """Serve `app` as `gatekeeper serve` does until the block ends: the runner, and a
    Listener with the read timeout and the connection limit (OSError if it cannot bind)."""
    runner = make_runner(app, settings)
    await runner.setup()
    listener = Listener(runner, settings, recorder=recorder, descriptors=descriptors)
    try:
        await listener.start(host, port)
        yield listener
    finally:
        await listener.close()
        await runner.cleanup()


@dataclass
class Service:
    """A wired service: the application and what must be closed after it."""

    app: web.Application
    controller: Controller
    recorder: Recorder
    sources: dict[str, Source] = field(default_factory=dict)
    clients: list[client.ApiClient] = field(default_factory=list)
    """Kubernetes clients the service built for itself (the actions' and the Lease's pools)."""

    async def close(self) -> None:
        """Release the sources' and own clients' connections (after the application stopped)."""
        await close_sources(self.sources)
        for own in self.clients:
            await own.close()


def create_service(
    loaded: LoadedConfig,
    api: client.ApiClient,
    *,
    token: str | None,
    tokens: dict[str, str] | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
    registry: CollectorRegistry | None = None,
    run_loop: bool = True,
    leadership: LeaderView | None = None,
    watch: bool = True,
    receivers: list[Receiver] | None = None,
    drivers: Sequence[Driver] = (),
    load_resolver: AbstractResolver | None = None,
) -> Service:
    """Everything `gatekeeper serve` runs, against the given Kubernetes API client.

    `token` is the single shared token (named `auth.token_name`), `tokens` the names file's
    entries ({name: token}). Dry-run never writes to the cluster, so it does not campaign
    for the Lease either.
    `receivers` default to the configured ones, their URLs read from the Secret now
    (ReceiverError when one cannot be read).
    `watch` streams route and Deployment changes so a change is evaluated at once.
    `drivers` send the dark its validation evidence (gatekeeper.drivers), besides the
    synthetic load of the pairs that configure `load` (its DNS: `load_resolver`, default
    the system's) and the test Job of those that configure `test_job` (unless `drivers`
    has a `jobs` driver).
    """
    config, rule_set = loaded.config, loaded.rule_set
    dry_run = dry_run or config.policy.dry_run
    recorder = Recorder(registry)
    board = OutcomeBoard()
    watcher = _watcher(api, config) if watch else None

    def drivers_of(name: str) -> frozenset[str]:  # the pairs served now (objects change)
        view = controller.views.get(name)
        return pair_drivers(view.pair) if view is not None else frozenset()

    sources = build_sources(config, rule_set, api_client=api, board=board,
                            pods=functools.partial(watcher.listed, PODS) if watcher else None,
                            server_now=watcher.server_now if watcher else None,
                            drivers_of=drivers_of)
    evaluator = Evaluator(rule_set, sources, window=config.evaluation.window,
                          source_timeout=config.evaluation.source_timeout,
                          max_concurrency=config.evaluation.max_concurrency, clock=clock)
    background: dict[str, CoroFactory] = {}
    # Actions and the Lease get pools of their own: a tick over many pairs queues thousands
    # of reads on `api`, the first tick over 1,000 pairs queues 1,000 state writes, and a
    # flip, a rollback or a Lease renewal must not wait behind them (at 1,000 pairs the
    # Lease renewals timed out behind both and the replica stopped leading).
    actions = kubeclient.own_pool(api, connections=ACTION_CONNECTIONS)
    clients = [actions]
    shards: ShardLeases | None = None
    if leadership is None:
        settings = config.leader_election
        if dry_run:
            settings = settings.model_copy(update={"enabled": False})
        lease = kubeclient.own_pool(api, connections=LEASE_CONNECTIONS)
        clients.append(lease)
        elected: Leadership | ShardLeases
        address = member_address(config.sharding.address, dict(os.environ),
                                 config.server.port)
        if config.sharding.enabled and settings.enabled:
            elected = shards = ShardLeases(lease, settings, config.sharding, address=address)
        else:
            elected = Leadership(lease, settings, address=address)
        if settings.enabled:
            background["leadership"] = elected.run
        leadership = elected
    # Switches record the Lease identity they run under, so the next leader knows a switch
    # left unfinished was abandoned (see Operations.recover).
    operations = Operations(actions, config, dry_run=dry_run, clock=clock,
                            lease=leadership.identity or "gatekeeper")
    if receivers is None:
        receivers = load_receivers(config.notifications)
    notifier = Notifier(config.notifications, receivers, recorder=recorder)
    controller = Controller(config, evaluator, operations, recorder=recorder,
                            leadership=leadership, notifier=notifier, wall=clock, reads=api,
                            drivers=Drivers(_drivers(config, recorder, drivers, load_resolver, api),
                                            board=board), cache=watcher)
    follow = _follower(controller, watcher)
    controller.on_pairs.append(follow)
    if shards is not None:
        def moved() -> None:  # a shard taken or handed over: tick now, watch its pairs
            controller.wake()
            follow()

        shards.on_change = moved
    if watcher is not None:
        if controller.leadership.sharded:
            follow()  # no shard held yet: nothing to watch
        watcher.subscribe(controller.on_watch_event)
        background["watch"] = watcher.run
    if watch and config.objects.enabled:
        pair_watch = PairWatch(api, controller, configured=[
            pair for pair in config.pairs if pair.object_namespace is None], clock=clock)
        background["pair objects"] = pair_watch.run
    reviewer = (TokenReviewer(actions, audiences=config.auth.token_review_audiences)
                if config.auth.token_review else None)
    auth = TokenAuth(token, tokens=tokens, token_name=config.auth.token_name, reviewer=reviewer)
    app = build_app(controller, auth, background=background, notifier=notifier,
                    run_loop=run_loop)
    return Service(app=app, controller=controller, recorder=recorder, sources=sources,
                   clients=clients)


def _drivers(config: Config, recorder: Recorder, extra: Sequence[Driver],
             resolver: AbstractResolver | None, api: client.ApiClient) -> list[Driver]:
    """The validation drivers: `extra`, the synthetic load when a pair configures it, the
    test Job when a pair configures one (and `extra` has no `jobs` driver), mirroring when
    a pair configures it (and `extra` has no `mirroring` driver). With `objects.enabled`
    all three (unless in `extra`): a pair object may configure any of them at any time; a
    driver no pair configures does nothing."""
    drivers = list(extra)
    names = {driver.name for driver in drivers}
    if resolver is None and config.service_addresses:
        resolver = StaticResolver(config.service_addresses)
    anything = config.objects.enabled
    if "load" not in names and (anything or any(pair.load is not None
                                                for pair in config.pairs)):
        drivers.append(LoadDriver(recorder, window=config.evaluation.window,
                                  resolver=resolver))
    if (anything or any(pair.test_job is not None for pair in config.pairs)) and \
            not any(driver.name == "jobs" for driver in drivers):
        drivers.append(TestJobDriver(api))
    if MirroringDriver.name not in names and (
            anything or any(pair.mirroring is not None for pair in config.pairs)):
        drivers.append(MirroringDriver(api))
    return drivers


def _follower(controller: Controller, watcher: Watcher | None) -> Callable[[], None]:
    """What keeps the watch streams on the pairs this replica evaluates (all of them, or
    a sharded replica's own): called when the pairs or the shards held change."""
    def follow() -> None:
        if watcher is not None:
            watcher.watch([pair for pair in controller.pairs.pairs()
                           if controller.evaluates(pair)])

    return follow


def _watcher(api: client.ApiClient, config: Config) -> Watcher:
    """A watch on the pairs' routes, Deployments and pods: it wakes the control loop and
    its cache answers the loop's reads."""
    watch = config.kubernetes.watch
    settings = WatchSettings(scope=watch.scope, max_streams=watch.max_streams)
    return Watcher(api, config.pairs, settings=settings)
