"""The edge agent: one source, the pure core, the NATS publisher and the metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from importlib import metadata
from types import TracebackType

from prometheus_client import CollectorRegistry

from edge_sync.config import EdgeConfig
from edge_sync.core.agent import EdgeCore
from edge_sync.core.filters import ServiceFilter
from edge_sync.core.model import ServiceRef, SourceService
from edge_sync.core.source_api import Source, SourceSink
from edge_sync.io.metrics import EdgeMetrics
from edge_sync.io.publisher import NatsPublisher
from syncmesh.labels import LabelCollision
from syncmesh.loggate import GatedLog
from syncmesh_io.http import MetricsServer
from syncmesh_io.retry import forever

__all__ = ["EdgeAgent", "run_edge", "build_source"]

log = logging.getLogger("edge_sync")


def _agent_version() -> str:
    try:
        return metadata.version("syncmesh")
    except metadata.PackageNotFoundError:
        return "0+unknown"


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

    @property
    def core(self) -> EdgeCore:
        assert self.agent.core is not None
        return self.agent.core

    def _after_change(self, collisions: list[LabelCollision]) -> None:
        agent, m = self.agent, self.agent.edge_metrics
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
        self._after_change(self.core.apply(changed, removed))

    def replace_all(self, services: Iterable[SourceService]) -> None:
        self._after_change(self.core.replace_all(services))

    def synced(self) -> None:
        queued = self.core.mark_source_synced()
        if queued:
            self.agent.edge_metrics.start_tombstones.inc(queued)
            log.info(
                "start-up reconciliation: %d tombstones for services the source no longer has",
                queued,
            )
        log.info(
            "source %s synced: %d services", self.agent.config.source.kind, self.core.service_count
        )
        self._after_change([])

    def failed(self, reason: str, detail: str) -> None:
        self.core.source_failed(reason, detail)
        m = self.agent.edge_metrics
        m.source_errors.labels(reason).inc()
        m.source_ok.set(0)
        self.agent.limited.warning(reason, self.agent.clock(), "source degraded: %s", detail)

    def recovered(self) -> None:
        if self.core.source_health != "ok":
            log.info("source %s recovered", self.agent.config.source.kind)
        self.core.source_recovered()
        m = self.agent.edge_metrics
        m.source_ok.set(1)
        m.last_sync.set(time.time())

    def invalid(self, reason: str, detail: str) -> None:
        self.agent.edge_metrics.invalid_input.labels(reason).inc()
        self.agent.limited.warning(reason, self.agent.clock(), "rejected input: %s", detail)

    def request(self, kind: str) -> None:
        self.agent.edge_metrics.source_requests.labels(kind).inc()


class EdgeAgent:
    """``async with EdgeAgent(config) as agent: await agent.wait_synced()``.

    ``agent.metrics`` is the agent's own CollectorRegistry.
    """

    def __init__(self, config: EdgeConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.metrics = registry if registry is not None else CollectorRegistry()
        self.edge_metrics = EdgeMetrics(self.metrics)
        self.limited = GatedLog(log)
        self.epoch = int(time.time() * 1000)
        self.core: EdgeCore | None = None
        self.publisher: NatsPublisher | None = None
        self.source: Source | None = None
        self.metrics_server: MetricsServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def clock(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def wake_publisher(self) -> None:
        if self.publisher is not None:
            self.publisher.wake.set()

    @property
    def metrics_port(self) -> int:
        return self.metrics_server.port if self.metrics_server is not None else 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.core = EdgeCore(
            self.config, self.epoch, self.clock(), self.config.agent_version or _agent_version()
        )
        self.publisher = NatsPublisher(
            self.config, self.core, self.edge_metrics, self.limited, self.clock
        )
        self.source = build_source(self.config, _AgentSink(self), self.core.filter)
        if self.config.metrics_port != 0:
            self.metrics_server = MetricsServer(
                self.metrics, self.config.metrics_address, self.config.metrics_port
            )
            await self.metrics_server.start()
        source, publisher = self.source, self.publisher
        self._tasks = [
            asyncio.create_task(self._supervise("source", source.run), name="edge-source"),
            asyncio.create_task(self._supervise("nats", publisher.run), name="edge-nats"),
        ]
        log.info(
            "edge agent for cluster %s started (source %s, epoch %d)",
            self.config.cluster,
            self.config.source.kind,
            self.epoch,
        )

    async def _supervise(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Restart a part that crashed with an unexpected error; nothing but cancel ends it."""

        def report(exc: BaseException, attempt: int) -> None:
            if what == "source":
                self.edge_metrics.source_errors.labels("source_crash").inc()
            else:
                self.edge_metrics.publish_errors.labels("crash").inc()
            log.error(
                "%s task crashed (attempt %d), restarting: %r", what, attempt, exc, exc_info=exc
            )

        async for attempt in forever((Exception,), report, initial_s=0.5, max_s=30.0):
            with attempt:
                await run()
                raise RuntimeError(f"{what} task returned")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None

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
                    f"edge agent not synced after {max_wait_s}s: source_synced={core and core.source_synced} "
                    f"reconciled={core and core.reconciled} dirty={core and core.state.dirty_count} "
                    f"source_health={core and core.source_health} {core and core.source_error_text}"
                )
            await asyncio.sleep(0.05)


async def run_edge(config: EdgeConfig, ready: asyncio.Event | None = None) -> None:
    """Run the agent until cancelled; ``ready`` is set once it is started."""
    async with EdgeAgent(config):
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
