"""One registry replica: stream consumer, view, probes, NATS API, admin HTTP and DNS.

Start order: the admin HTTP first (``/healthz`` answers while NATS is still
unreachable), then NATS and the stream consumer in the background. The
replica is ready once the view caught up with the stream's last sequence at
start and every gateway known then was probed once; only then do the DNS
server and the NATS API start, so no client sees answers from a half-built view.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from dns_server.io.server import DnsServer, start_dns
from global_registry.core.ingest import Ingest, IngestResult, MessageKind
from global_registry.core.probes import GatewayId, GatewayProbes, GatewayStatus
from global_registry.core.records import Outcome
from global_registry.core.snapshot import RegistryStatus, status
from global_registry.core.view import RegistryView
from global_registry.io.admin import AdminServer
from global_registry.io.anti_entropy import ResyncSender
from global_registry.io.api import RegistryApi
from global_registry.io.metrics import RegistryMetrics, ViewCollector
from global_registry.io.probe_runner import ProbeRunner
from global_registry.io.status_api import serve_status
from global_registry.io.stream_reader import StreamReader
from syncmesh import subjects
from syncmesh.schema import (
    SCHEMA_VERSION,
    ClusterBeat,
    GatewayProbeReport,
    ProbeReport,
    ServiceState,
    encode,
)
from syncmesh.view_api import ViewChange
from syncmesh_app.registry_config import RegistryConfig
from syncmesh_io.gc_pauses import GcPauses, keep_frozen, refreeze
from syncmesh_io.nats_connection import connect, ensure_stream
from syncmesh_io.retry import forever

__all__ = ["RegistryApp", "run_registry"]

log = logging.getLogger("syncmesh.registry")


class RegistryApp:
    """``async with RegistryApp(config) as app: await app.wait_ready()``.

    ``collector_registry`` holds every Prometheus metric of the process (the
    DNS server's too; ``/metrics`` serves it); ``metrics`` are the registry's own.
    """

    def __init__(
        self,
        config: RegistryConfig,
        collector_registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.collector_registry = (
            collector_registry if collector_registry is not None else CollectorRegistry()
        )
        self.metrics = RegistryMetrics(self.collector_registry)
        self._gc_pauses = GcPauses(self.collector_registry)
        self._view = RegistryView(
            config.stale,
            config.limits,
            config.locality.to_locality(),
            probes_required=config.probe.enabled,
            load=config.load,
        )
        self._ingest = Ingest(self._view, config.limits)
        self.collector_registry.register(ViewCollector(lambda: self._view, lambda: self._ingest))
        self.metrics.stream_seq.set_function(lambda: self._ingest.last_seq)
        self._resync = ResyncSender(config.anti_entropy, config.replica, self.metrics)
        self._rng = rng
        self.nc: Any = None
        # The stream reader's own connection (the fast reader takes over its parser).
        self._ingest_nc: Any = None
        self._gc_paused = False
        self._reader: StreamReader | None = None
        self._prober: ProbeRunner | None = None
        self._api: RegistryApi | None = None
        self._admin: AdminServer | None = None
        self._dns: DnsServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._main: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._stale_wake: asyncio.Event | None = None
        self._report_wake: asyncio.Event | None = None
        self._phase = "starting"

    # -- public ---------------------------------------------------------------

    @property
    def view(self) -> RegistryView:
        return self._view

    @property
    def admin_port(self) -> int:
        return self._admin.port if self._admin is not None else 0

    @property
    def dns_port(self) -> int | None:
        return self._dns.port if self._dns is not None and self._dns.port else None

    @property
    def ready(self) -> bool:
        return self._ready is not None and self._ready.is_set()

    async def wait_ready(self) -> None:
        """Until the replica serves (bound it with ``asyncio.timeout``); raises what
        stopped it from getting there (say, the DNS port is taken)."""
        assert self._ready is not None and self._main is not None, "start() first"
        if self._ready.is_set():
            return
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, self._main}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._ready.is_set():
            return
        self._main.result()
        raise RuntimeError("registry stopped before it was ready")

    def readiness(self) -> str:
        if self.ready:
            return "ready"
        ingest = self._ingest
        if self._phase == "catching-up":
            return f"not ready: catching up with the stream (sequence {ingest.last_seq} of {ingest.target_seq})"
        return f"not ready: {self._phase}"

    def status_report(self) -> RegistryStatus:
        now = asyncio.get_running_loop().time()
        probes = self._prober.probes.details() if self._prober is not None else None
        return status(
            self._view, now, self.config.replica, self.ready, probes, self._resync.core.status
        )

    async def __aenter__(self) -> RegistryApp:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._ready = asyncio.Event()
        self._stale_wake = asyncio.Event()
        self._report_wake = asyncio.Event()
        self._admin = AdminServer(
            self, self.collector_registry, self.config.admin_address, self.config.admin_port
        )
        await self._admin.start()
        log.info("admin HTTP on %s:%d", self.config.admin_address, self._admin.port)
        self._main = asyncio.create_task(self._run(), name="registry-main")
        self._tasks.append(self._main)

    async def close(self) -> None:
        # Withdraw readiness before anything stops: /readyz answers 503 (and the gauge
        # reads 0) while DNS and the API still serve, so load balancers move first.
        if self.ready:
            assert self._ready is not None
            self._ready.clear()
            self.metrics.ready.set(0)
            self._phase = "stopping"
            log.info("stopping: not ready any more; closing DNS, the API and the stream reader")
        for task in reversed(self._tasks):
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self._resync.close()
        if self._dns is not None:
            await self._dns.close()
            self._dns = None
        if self._api is not None:
            await self._api.stop()
            self._api = None
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
        for nc in (self._ingest_nc, self.nc):
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
        self.nc = self._ingest_nc = None
        self._resume_gc()
        self._gc_pauses.close()
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        self.metrics.ready.set(0)

    # -- lifecycle ----------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    def _report_retry(self, exc: BaseException, attempt: int) -> None:
        # /readyz tells the phase too.
        log.error("%s failed (attempt %d): %s; retrying", self._phase, attempt, exc)

    async def _connect(self) -> None:
        """Connect and make sure the stream exists, retrying until both succeed."""
        async for attempt in forever((Exception,), self._report_retry):
            with attempt:
                self._phase = "connecting to NATS"
                nc = await connect(
                    self.config.nats,
                    name=self.config.nats.name or f"syncmesh-registry-{self.config.replica}",
                    error_cb=self._nats_error,
                )
                try:
                    self._phase = "creating the stream"
                    await ensure_stream(nc.jetstream(), self.config.nats.replicas)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await nc.close()
                    raise
                self.nc = nc

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await self._connect()
        self._resync.nc = self.nc
        await serve_status(self.nc, self)
        if self.config.probe.enabled:
            probes = GatewayProbes(self.config.probe, self._rng)
            self._prober = ProbeRunner(self.config.probe, probes, self._on_probe, self.metrics)
            self._spawn(self._prober.run(), "registry-probes")
            self._spawn(self._publish_probe_reports(), "registry-probe-reports")
        self._spawn(self._track_staleness(), "registry-staleness")
        ingest = self.config.ingest
        reader_nc = self.nc
        if ingest.fast_path:
            reader_nc = self._ingest_nc = await connect(
                self.config.nats,
                name=f"{self.config.nats.name or 'syncmesh-registry-' + self.config.replica}-stream",
                error_cb=self._nats_error,
            )
        self._phase = "catching-up"
        self._reader = StreamReader(
            reader_nc,
            self._ingest,
            self._on_ingest,
            fast_path=ingest.fast_path,
            heartbeat_s=ingest.heartbeat_s,
        )
        if ingest.pause_gc_while_catching_up and gc.isenabled():
            gc.disable()
            self._gc_paused = True
        try:
            await self._start_reading(self._reader)
            await self._reader.caught_up.wait()
            self.metrics.catchup_seconds.set(
                (self._ingest.caught_up_at or 0.0) - (self._ingest.started_at or 0.0)
            )
        finally:
            if self._resume_gc():
                # Collect what the read left behind, then keep the view (which lives as
                # long as the process) out of every later scan.
                refreeze(full=True)
                # syncmesh_gc_longest_pause_seconds is the longest while serving.
                self._gc_pauses.longest_s = 0.0
        if self._prober is not None:
            self._phase = "waiting for the first probe of every gateway"
            # A gateway that never answers still resolves after its timeout.
            bound = self.config.probe.timeout_s + self.config.probe.interval_s + 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(bound):
                    await self._prober.wait_all_probed()
        self._phase = "starting DNS and API"
        if self.config.dns.enabled:
            self._dns = await start_dns(self.config.dns, self._view, self.collector_registry)
        if self.config.api.enabled:
            self._api = RegistryApi(self.nc, self.config.api, lambda: self._view, self.metrics)
            await self._api.start()
        self._spawn(keep_frozen(self.config.gc), "registry-gc")
        assert self._ready is not None
        self._ready.set()
        self.metrics.ready.set(1)
        catchup = (self._ingest.caught_up_at or 0.0) - (self._ingest.started_at or 0.0)
        log.info(
            "ready: %d clusters, %d services, caught up in %.3fs, ready after %.3fs",
            len(self._view.clusters),
            self._view.service_count(),
            catchup,
            loop.time() - (self._ingest.started_at or loop.time()),
        )

    async def _start_reading(self, reader: StreamReader) -> None:
        """Subscribe to the stream, retrying (JetStream may be electing a leader)."""
        async for attempt in forever((Exception,), self._report_retry):
            with attempt:
                try:
                    await reader.start()
                except BaseException:
                    await reader.stop()
                    raise

    def _resume_gc(self) -> bool:
        if not self._gc_paused:
            return False
        self._gc_paused = False
        gc.enable()
        return True

    async def _nats_error(self, exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    # -- event fan-out ----------------------------------------------------------

    def _forward(self, change: ViewChange) -> None:
        if not change:
            return
        scope = "everything" if change.everything else "services" if change.services else "counts"
        self.metrics.view_changes.labels(scope).inc()
        if self._dns is not None:
            self._dns.invalidate(change)

    def _on_ingest(self, result: IngestResult) -> None:
        if result.gateways_changed and self._prober is not None:
            self._prober.set_targets(self._view.gateway_ids())
        if self._stale_wake is not None and (
            result.kind is MessageKind.CLUSTER
            or (isinstance(result.message, ServiceState) and result.message.deleted)
        ):
            # A beat moves its cluster's staleness deadline; a tombstone adds an expiry.
            self._stale_wake.set()
        if result.live or result.caught_up_now:
            self._forward(result.change)
        message = result.message
        if (
            result.live
            and isinstance(message, ClusterBeat)
            and result.outcome in (Outcome.APPLIED, Outcome.SAME)
        ):
            if message.retired:
                self._resync.core.forget(message.cluster)
            rec = self._view.clusters.get(message.cluster)
            if rec is not None and rec.beat is message:
                # Anti-entropy: the view now holds everything stored before this beat.
                self._resync.on_beat(message, rec, asyncio.get_running_loop().time())

    def _on_probe(self, gw: GatewayId, gateway_status: GatewayStatus, up_changed: bool) -> None:
        self._forward(self._view.set_gateway_status(gw, gateway_status))
        if up_changed and self._report_wake is not None:
            self._report_wake.set()

    # -- timers -------------------------------------------------------------------

    async def _track_staleness(self) -> None:
        """The view's clock: agents turning stale, tombstones expiring."""
        loop = asyncio.get_running_loop()
        assert self._stale_wake is not None
        while True:
            deadline = self._view.next_deadline()
            # Strictly after the deadline: an agent is stale once its beat is *older* than the TTL.
            delay = None if deadline is None else max(0.0, deadline - loop.time()) + 0.01
            self._stale_wake.clear()
            # asyncio.timeout, not wait_for: on 3.11, wait_for swallows a cancel that
            # arrives just as the event is set, and close() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stale_wake.wait()
            self._forward(self._view.tick(loop.time()))

    def probe_report(self) -> ProbeReport:
        assert self._prober is not None
        gateways = [
            GatewayProbeReport(
                cluster=gw.cluster,
                address=gw.address,
                port=gw.port,
                state=str(detail.phase),
                up=detail.up,
                rtt_ms=None if detail.rtt_ms is None else round(detail.rtt_ms, 3),
            )
            for gw, detail in sorted(self._prober.probes.details().items())
        ]
        return ProbeReport(
            schema=SCHEMA_VERSION,
            replica=self.config.replica,
            sent_at=time.time(),
            gateways=gateways,
        )

    async def _publish_probe_reports(self) -> None:
        assert self._report_wake is not None
        subject = subjects.probe_subject(self.config.replica)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.probe.report_interval_s):
                    await self._report_wake.wait()
            # Coalesce a burst of transitions into one report.
            await asyncio.sleep(0.2)
            self._report_wake.clear()
            try:
                await self.nc.publish(subject, encode(self.probe_report()))
            except Exception as exc:  # observers are best effort
                log.debug("probe report not published: %s", exc)


async def run_registry(config: RegistryConfig, ready: asyncio.Event | None = None) -> None:
    """Run one replica until cancelled; ``ready`` is set once it serves."""
    async with RegistryApp(config) as app:
        await app.wait_ready()
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
