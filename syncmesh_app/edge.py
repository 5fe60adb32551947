"""The edge agent: one source, the pure core, the NATS publisher and the metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from edge_sync.config import DEFAULT_METRICS_PORT, EdgeConfig
from edge_sync.core.agent import EdgeCore
from edge_sync.core.epoch_claim import EpochClaimer
from edge_sync.core.filters import ServiceFilter
from edge_sync.core.model import ServiceRef, SourceService
from edge_sync.core.source_api import Source, SourceSink
from edge_sync.io.errors import Deposed
from edge_sync.io.metrics import EdgeMetrics
from syncmesh.configfile import ConfigError
from syncmesh.errors import SyncmeshError
from syncmesh.labels import LabelCollision
from syncmesh.loggate import GatedLog
from syncmesh_io.retry import forever

if TYPE_CHECKING:
    # Imported when used (start-up order, see EdgeAgent.start): the NATS client, aiohttp's
    # server and the load poller are not needed before the source's first request is out.
    from edge_sync.io.load import LoadPoller
    from edge_sync.io.publisher import NatsPublisher
    from syncmesh_io.http import HttpReply, HttpServer

__all__ = ["EdgeAgent", "AgentDeposed", "run_edge", "build_source", "tune_gc"]

log = logging.getLogger("edge_sync")

# EdgeAgent.start: how long the rest of the agent waits for the source's first request,
# and how many loop turns it then leaves aiohttp to connect and send it.
SOURCE_HEAD_START_S = 0.5
SOURCE_HEAD_START_TURNS = 4
# tune_gc: allocations between two collections of the youngest generation (CPython: 700).
GC_GEN0_THRESHOLD = 10_000


def _agent_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("syncmesh")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def tune_gc() -> None:
    """The ``syncmesh edge`` process's garbage collector (a process setting, not for a
    library caller): an initial sync builds ~10^5 objects that live as long as the agent
    (instances, states, their messages), and with CPython's defaults the collector scanned
    them again and again, full collections included: 190-260 ms of a 5,000-service sync.
    What is imported by now is frozen (never scanned again), and the youngest generation
    is collected every ``GC_GEN0_THRESHOLD`` allocations. Reference counting frees almost
    everything the agent drops; cycles are still collected, only less often."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


class AgentDeposed(SyncmeshError):
    """Another agent claimed this cluster; this one stopped publishing and must exit."""

    def __init__(self, detail: str) -> None:
        super().__init__("deposed", detail)


def build_source(config: EdgeConfig, sink: SourceSink, service_filter: ServiceFilter) -> Source:
    kind = config.source.kind
    if kind == "file":
        from edge_sync.io.service_file import FileSource

        return FileSource(config.source.file, sink)
    if kind == "consul":
        from edge_sync.io.consul import ConsulSource

        return ConsulSource(config.source.consul, sink, service_filter.may_accept_name)
    from edge_sync.io.nacos import NacosSource

    return NacosSource(config.source.nacos, sink, service_filter.may_accept_name)


class _AgentSink:
    """The sink sources report to: core updates plus metrics, rate-limited logs and a publisher wake-up."""

    def __init__(self, agent: EdgeAgent) -> None:
        self.agent = agent

    def _going(self) -> None:
        if not self.agent.source_going.is_set():
            self.agent.source_going.set()

    @property
    def core(self) -> EdgeCore:
        assert self.agent.core is not None
        return self.agent.core

    def _after_change(self, collisions: list[LabelCollision]) -> None:
        agent, m = self.agent, self.agent.metrics
        for collision in collisions:
            m.label_collision_events.inc()
            agent.limited.warning(
                f"collision:{collision.label}", agent.clock(), "label collision: %s", collision
            )
        core = self.core
        m.services.set(core.service_count)
        m.instances.set(core.instance_count)
        m.label_collisions.set(core.collision_count)
        m.pending.set(core.state.dirty_count + core.state.inflight_count)
        agent.wake_publisher()

    def apply(
        self, changed: Iterable[SourceService] = (), removed: Iterable[ServiceRef] = ()
    ) -> None:
        self._going()
        self._after_change(self.core.apply(changed, removed))

    def replace_all(self, services: Iterable[SourceService]) -> None:
        self._going()
        self._after_change(self.core.replace_all(services))

    def synced(self) -> None:
        self._going()
        queued = self.core.mark_source_synced()
        if queued:
            self.agent.metrics.start_tombstones.inc(queued)
            log.info(
                "start-up reconciliation: %d tombstones for services the source no longer has",
                queued,
            )
        log.info(
            "source %s synced: %d services", self.agent.config.source.kind, self.core.service_count
        )
        self._after_change([])

    def failed(self, reason: str, detail: str) -> None:
        self._going()
        self.core.source_failed(reason, detail)
        m = self.agent.metrics
        m.source_errors.labels(reason).inc()
        m.source_ok.set(0)
        self.agent.limited.warning(reason, self.agent.clock(), "source degraded: %s", detail)

    def recovered(self) -> None:
        if self.core.source_health != "ok":
            log.info("source %s recovered", self.agent.config.source.kind)
        self.core.source_recovered()
        m = self.agent.metrics
        m.source_ok.set(1)
        m.last_sync.set(time.time())

    def invalid(self, reason: str, detail: str) -> None:
        self.agent.metrics.invalid_input.labels(reason).inc()
        self.agent.limited.warning(reason, self.agent.clock(), "rejected input: %s", detail)

    def request(self, kind: str) -> None:
        self._going()
        self.agent.metrics.source_requests.labels(kind).inc()

    def event(self, kind: str) -> None:
        self.agent.metrics.source_events.labels(kind).inc()


class EdgeAgent:
    """``async with EdgeAgent(config) as agent: await agent.wait_synced()``.

    ``agent.collector_registry`` is the agent's own prometheus CollectorRegistry,
    ``agent.metrics`` the metrics on it. ``agent.stopped`` is set when the agent
    stopped by itself (deposed by a newer agent of its cluster).
    """

    def __init__(self, config: EdgeConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.collector_registry = registry if registry is not None else CollectorRegistry()
        self.metrics = EdgeMetrics(self.collector_registry)
        self.limited = GatedLog(log)
        self.core: EdgeCore | None = None
        self.publisher: NatsPublisher | None = None
        self.source: Source | None = None
        self.load: LoadPoller | None = None
        self.http: HttpServer | None = None
        self.stopped = asyncio.Event()
        # Set by the source's first request (or first report): see ``start``.
        self.source_going = asyncio.Event()
        self.deposed: Deposed | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def epoch(self) -> int:
        """The stream sequence of this term's claim (0 until claimed, and while standing by)."""
        return self.core.epoch if self.core is not None else 0

    @property
    def standing_by(self) -> bool:
        """A standby agent of a standby group (``ha.standby``) while another agent leads."""
        standby = self.publisher.standby if self.publisher is not None else None
        return standby is not None and standby.standing_by

    def clock(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def wake_publisher(self) -> None:
        if self.publisher is not None:
            self.publisher.wake.set()

    @property
    def metrics_port(self) -> int:
        """The bound port of /metrics, /healthz and /readyz (0: off)."""
        return self.http.port if self.http is not None else 0

    async def start(self) -> None:
        """The source first, then NATS, the HTTP endpoints and the load poller.

        The source task starts first; for Consul, its first requests go out before the
        rest of the agent is imported and started: Consul works on its answers, on its
        own CPU, while this process connects to NATS, checks the stream, claims the
        epoch and binds its HTTP port. Nothing is published before NATS is connected and the epoch
        claimed (the publisher's drain only starts then), and /readyz stays 503 until
        the initial sync is in NATS, whatever the order here.
        """
        self._loop = asyncio.get_running_loop()
        agent_id = f"{socket.gethostname()}:{os.getpid()}"
        # The package version (importlib.metadata, ~10 ms of imports) is looked up once
        # the source's first request is out; nothing reads it before the first beat.
        self.core = EdgeCore(self.config, self.clock(), self.config.agent_version, agent=agent_id)
        problem = self.core.config_problem()
        if problem is not None:
            # The CLI turns this into exit status 2, like any other bad config.
            raise ConfigError(f"the registry would reject this agent's beats: {problem}")
        self.source = build_source(self.config, _AgentSink(self), self.core.filter)
        source = self.source
        self._tasks = {
            "source": asyncio.create_task(
                self._supervise("source", source.run), name="edge-source"
            ),
        }
        try:
            await self._source_head_start()
            self.core.agent_version = self.config.agent_version or _agent_version()
            self._start_publisher(agent_id)
            await self._start_http()
            self._start_load()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "edge agent for cluster %s started (source %s%s)",
            self.config.cluster,
            self.config.source.kind,
            ", standby group" if self.config.ha.standby else "",
        )

    async def _source_head_start(self) -> None:
        """Until Consul's first requests are on their way (bounded: a Consul that cannot be
        reached only delays the rest by ``SOURCE_HEAD_START_S``). A service file is read at
        once; the Nacos SDK first connects for a while, with the loop free for NATS."""
        if self.config.source.kind != "consul":
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.source_going.wait(), SOURCE_HEAD_START_S)
        # The request was only handed to aiohttp: a few turns of the loop connect and
        # write it (and its sibling, the other watch) before the imports below block.
        for _ in range(SOURCE_HEAD_START_TURNS):
            await asyncio.sleep(0)

    def _start_publisher(self, agent_id: str) -> None:
        from edge_sync.io.publisher import NatsPublisher

        assert self.core is not None
        claimer = EpochClaimer(self.config.cluster, agent_id, secrets.token_hex(6))
        self.publisher = NatsPublisher(
            self.config, self.core, self.metrics, self.limited, self.clock, claimer
        )
        publisher = self.publisher
        self._tasks["nats"] = asyncio.create_task(
            self._supervise("nats", publisher.run), name="edge-nats"
        )

    def _start_load(self) -> None:
        if not self.config.load.sources:
            return
        from edge_sync.io.load import LoadMetrics, LoadPoller

        assert self.core is not None and self.publisher is not None
        self.load = LoadPoller(
            self.config,
            self.core.loads,
            LoadMetrics(self.collector_registry),
            on_move=self.publisher.beat_wake.set,
        )
        self._tasks["load"] = asyncio.create_task(
            self._supervise("load", self.load.run), name="edge-load"
        )

    # -- HTTP: /metrics, /healthz, /readyz ---------------------------------
    async def _start_http(self) -> None:
        configured = self.config.metrics_port
        if configured == 0:
            return
        address = self.config.metrics_address
        port = DEFAULT_METRICS_PORT if configured is None else configured
        try:
            self.http = await self._serve_http(address, port)
        except OSError as exc:
            if configured is not None:
                raise ConfigError(
                    f"metrics_port {port}: cannot listen on {address}: {exc}"
                ) from exc
            # The default port is taken (another agent on this host): still serve, and say where.
            self.http = await self._serve_http(address, -1)
            log.warning(
                "metrics_port %d is taken (%s); serving /metrics, /healthz and /readyz on %s:%d",
                port,
                exc.strerror or exc,
                address,
                self.http.port,
            )
        log.info("serving /metrics, /healthz and /readyz on %s:%d", address, self.http.port)

    async def _serve_http(self, address: str, port: int) -> HttpServer:
        from syncmesh_io.http import HttpServer, metrics_route

        http = HttpServer(address, port)
        http.add_get("/metrics", metrics_route(self.collector_registry))
        http.add_get("/healthz", self._healthz)
        http.add_get("/readyz", self._readyz)
        await http.start()
        return http

    async def _healthz(self) -> HttpReply:
        from syncmesh_io.http import json_reply

        # Alive until the agent stopped by itself (deposed): then it only waits to exit.
        if self.stopped.is_set():
            return json_reply(503, {"status": "stopped", "reason": str(self.deposed)})
        return json_reply(200, {"status": "ok"})

    async def _readyz(self) -> HttpReply:
        from syncmesh_io.http import json_reply

        if self.core is None or self.publisher is None:
            return json_reply(503, {"ready": False})
        standby = self.publisher.standby
        readiness = self.core.readiness(
            self.publisher.connected.is_set(),
            deposed=self.deposed is not None,
            standby=standby is not None and standby.standing_by,
        )
        return json_reply(200 if readiness.ready else 503, readiness._asdict())

    async def _supervise(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Restart a part that crashed with an unexpected error; only cancel or deposition end it."""

        def report(exc: BaseException, attempt: int) -> None:
            self.metrics.task_crashes.labels(what).inc()
            log.error(
                "%s task crashed (attempt %d), restarting: %r", what, attempt, exc, exc_info=exc
            )

        async for attempt in forever((Exception,), report, initial_s=0.5, max_s=30.0):
            with attempt:
                try:
                    await run()
                except Deposed as exc:
                    self._on_deposed(exc)
                    return
                raise RuntimeError(f"{what} task returned")

    def _on_deposed(self, exc: Deposed) -> None:
        """Stop for good: a newer agent owns the cluster (the server already refuses our writes)."""
        self.deposed = exc
        self.metrics.deposed.inc()
        log.error(
            "deposed: %s; this agent stops publishing and exits (a newer agent owns cluster %s)",
            exc,
            self.config.cluster,
        )
        source = self._tasks.get("source")
        if source is not None:
            source.cancel()
        self.stopped.set()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = {}
        if self.http is not None:
            await self.http.stop()
            self.http = None

    async def __aenter__(self) -> EdgeAgent:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def synced(self) -> bool:
        return (
            self.core is not None
            and self.core.synced
            and self.publisher is not None
            and self.publisher.connected.is_set()
        )

    async def wait_synced(self, max_wait_s: float = 60.0) -> None:
        """Until the source's whole view is in NATS and start-up tombstones are published."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_s
        while not self.synced:
            if loop.time() >= deadline:
                core = self.core
                raise TimeoutError(
                    f"edge agent not synced after {max_wait_s}s: epoch={self.epoch} "
                    f"source_synced={core and core.source_synced} "
                    f"reconciled={core and core.reconciled} dirty={core and core.state.dirty_count} "
                    f"source_health={core and core.source_health} {core and core.source_error_text}"
                )
            await asyncio.sleep(0.05)


async def run_edge(config: EdgeConfig, ready: asyncio.Event | None = None) -> None:
    """Run the agent until cancelled; ``ready`` is set once it is started.

    Raises ``AgentDeposed`` when a newer agent claimed the cluster, so that the
    process exits non-zero and its supervisor sees it.
    """
    async with EdgeAgent(config) as agent:
        if ready is not None:
            ready.set()
        await agent.stopped.wait()
    raise AgentDeposed(str(agent.deposed))
