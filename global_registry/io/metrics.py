"""Prometheus metrics of one registry replica, on a CollectorRegistry passed in.

Counters are incremented by the adapters (or kept as plain ints by the
ingest core and exported at scrape time); gauges that describe the view
(clusters by state, services, gateways) are read from it at scrape time by a
custom collector, so the hot ingest path updates nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from global_registry.core.ingest import Ingest
from global_registry.core.view import RegistryView
from syncmesh.validate import REJECT_REASONS

__all__ = ["RegistryMetrics", "ViewCollector"]


class RegistryMetrics:
    def __init__(self, collector_registry: CollectorRegistry) -> None:
        self.view_changes = Counter(
            "syncmesh_registry_view_changes",
            "View changes forwarded to the DNS cache, by scope (everything; services: candidates "
            "may differ; counts: only healthy counts moved).",
            ["scope"],
            registry=collector_registry,
        )
        self.probes = Counter(
            "syncmesh_registry_probes",
            "Gateway TCP probes by outcome (ok, refused, timeout, unreachable, error).",
            ["outcome"],
            registry=collector_registry,
        )
        self.probe_transitions = Counter(
            "syncmesh_registry_gateway_transitions",
            "Gateway up/down transitions after rise/fall hysteresis, by new state.",
            ["up"],
            registry=collector_registry,
        )
        self.probe_seconds = Histogram(
            "syncmesh_registry_probe_connect_seconds",
            "TCP connect time of successful gateway probes.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=collector_registry,
        )
        self.api_requests = Counter(
            "syncmesh_registry_api_requests",
            "NATS API requests by api (resolve, inventory) and outcome (ok, error).",
            ["api", "outcome"],
            registry=collector_registry,
        )
        self.ready = Gauge(
            "syncmesh_registry_ready",
            "1 once the view caught up with the stream and every gateway was probed once.",
            registry=collector_registry,
        )
        self.catchup_seconds = Gauge(
            "syncmesh_registry_catchup_seconds",
            "Seconds from subscribing to having read the stream's last sequence at start.",
            registry=collector_registry,
        )
        self.resync_requests = Counter(
            "syncmesh_registry_resync_requests",
            "Resync requests this replica sent to a cluster's agent because its view kept "
            "differing from the digest in the agent's beats (anti-entropy).",
            ["cluster"],
            registry=collector_registry,
        )
        self.stream_seq = Gauge(
            "syncmesh_registry_stream_sequence",
            "Stream sequence of the last message consumed.",
            registry=collector_registry,
        )


class ViewCollector(Collector):
    """Metrics read from the ingest core and the view on scrape (the hot path counts in plain ints)."""

    def __init__(
        self, view: Callable[[], RegistryView | None], ingest: Callable[[], Ingest | None]
    ) -> None:
        self._view = view
        self._ingest = ingest

    def collect(self) -> Iterator[Metric]:
        yield from self._collect_ingest()
        yield from self._collect_view()

    def _collect_ingest(self) -> Iterator[Metric]:
        ingest = self._ingest()
        messages = CounterMetricFamily(
            "syncmesh_registry_messages",
            "Stream messages by kind (svc, cluster, epoch, unknown) and outcome "
            "(applied, same, stale-revision, rejected).",
            labels=["kind", "outcome"],
        )
        rejected = CounterMetricFamily(
            "syncmesh_registry_rejected_messages",
            "Stream messages rejected by validation or epoch fencing, by reason; "
            "a rejected message changes nothing.",
            labels=["reason"],
        )
        if ingest is not None:
            for (kind, outcome), count in sorted(ingest.counts.items()):
                messages.add_metric([kind, outcome], count)
            for reason in REJECT_REASONS:
                rejected.add_metric([reason], ingest.rejections.get(reason, 0))
        yield messages
        yield rejected

    def _collect_view(self) -> Iterator[Metric]:
        view = self._view()
        clusters = GaugeMetricFamily(
            "syncmesh_registry_clusters",
            "Clusters by agent state: fresh, stale (beat older than its TTL), "
            "served_stale (stale but served under the 'serve' policy).",
            labels=["state"],
        )
        services = GaugeMetricFamily(
            "syncmesh_registry_services", "Services (per cluster) in the view."
        )
        instances = GaugeMetricFamily("syncmesh_registry_instances", "Instances in the view.")
        gw_up = GaugeMetricFamily(
            "syncmesh_registry_gateway_up",
            "1 when the gateway passes its probes (after hysteresis).",
            labels=["cluster", "address", "port"],
        )
        gw_rtt = GaugeMetricFamily(
            "syncmesh_registry_gateway_rtt_seconds",
            "Moving average of the gateway's TCP connect time from this replica.",
            labels=["cluster", "address", "port"],
        )
        gw_load = GaugeMetricFamily(
            "syncmesh_registry_gateway_load_percent",
            "Gateway load as its agent last announced it (absent: unknown).",
            labels=["cluster", "address", "port"],
        )
        overloaded = GaugeMetricFamily(
            "syncmesh_registry_cluster_overloaded",
            "1 while the cluster is ranked after every other for its load (with hysteresis).",
            labels=["cluster"],
        )
        if view is not None:
            for name, rec in view.clusters.items():
                load = view.cluster_load(name)
                overloaded.add_metric([name], 1.0 if load is not None and load.overloaded else 0.0)
                for g in rec.beat.gateways if rec.beat is not None else ():
                    if g.load is not None:
                        gw_load.add_metric([name, g.address, str(g.port)], float(g.load))
            fresh = stale = served = 0
            for name, rec in view.clusters.items():
                if not rec.stale:
                    fresh += 1
                    continue
                stale += 1
                if view.stale_policy == "serve" and view.up_gateways(name):
                    served += 1
            clusters.add_metric(["fresh"], fresh)
            clusters.add_metric(["stale"], stale)
            clusters.add_metric(["served_stale"], served)
            services.add_metric([], view.service_count())
            instances.add_metric([], view.instance_count)
            for gw in view.gateway_ids():
                labels = [gw.cluster, gw.address, str(gw.port)]
                up = view.up_gateways(gw.cluster)
                gw_up.add_metric(
                    labels,
                    1.0 if any(g.address == gw.address and g.port == gw.port for g in up) else 0.0,
                )
                status = view.gateway_status(gw)
                if status is not None and status.rtt_ms is not None:
                    gw_rtt.add_metric(labels, status.rtt_ms / 1000.0)
        yield clusters
        yield services
        yield instances
        yield gw_up
        yield gw_rtt
        yield gw_load
        yield overloaded
