"""Prometheus export of the DNS server's counters.

The hot path counts in plain ints (``Stats``); this collector reads them at
scrape time, so a query costs one integer add instead of a labelled
``Counter.inc``. Latency is a real histogram, observed for a sample only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dns_server.core.engine import Stats

__all__ = ["DnsMetrics"]

_LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1)


class _StatsCollector(Collector):
    def __init__(self, stats: Callable[[], Stats], cache_entries: Callable[[], int]) -> None:
        self._stats = stats
        self._cache_entries = cache_entries

    def _families(self) -> tuple[CounterMetricFamily, ...]:
        return (
            CounterMetricFamily(
                "syncmesh_dns_queries",
                "DNS queries answered or dropped, by qtype and rcode",
                labels=["qtype", "rcode"],
            ),
            CounterMetricFamily(
                "syncmesh_dns_cache_hits",
                "Queries answered from precomputed wire answers, by cache level: "
                "packet (whole response remembered, the UDP fast path) or answer (templates)",
                labels=["level"],
            ),
            CounterMetricFamily(
                "syncmesh_dns_cache_misses", "Questions resolved and rendered because not cached"
            ),
            CounterMetricFamily("syncmesh_dns_truncated", "UDP answers cut to fit and flagged TC"),
            CounterMetricFamily(
                "syncmesh_dns_rejected",
                "Malformed or unanswerable queries and internal errors, by reason",
                labels=["reason"],
            ),
        )

    def describe(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield from self._families()
        yield GaugeMetricFamily("syncmesh_dns_cache_entries", "Precomputed answers held")

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats()
        queries, hits, misses, truncated, rejected = self._families()
        totals: dict[tuple[str, str], int] = dict(stats.uncached)
        for cells in (stats.cells, stats.answer_cells):
            for key, cell in list(cells.items()):
                totals[key] = totals.get(key, 0) + cell[0]
        for (qtype, rcode), n in sorted(totals.items()):
            queries.add_metric([qtype, rcode], n)
        hits.add_metric(["packet"], stats.packet_hits)
        hits.add_metric(["answer"], stats.answer_hits)
        misses.add_metric([], stats.misses)
        truncated.add_metric([], stats.truncated)
        for reason, n in sorted(stats.rejected.items()):
            rejected.add_metric([reason], n)
        yield from (queries, hits, misses, truncated, rejected)
        entries = GaugeMetricFamily("syncmesh_dns_cache_entries", "Precomputed answers held")
        entries.add_metric([], self._cache_entries())
        yield entries


class DnsMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        stats: Callable[[], Stats],
        cache_entries: Callable[[], int],
    ) -> None:
        registry.register(_StatsCollector(stats, cache_entries))
        self.latency = Histogram(
            "syncmesh_dns_answer_latency_seconds",
            "Time from datagram or TCP message received to answer sent (sampled)",
            ["transport"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.udp_latency = self.latency.labels("udp")
        self.tcp_latency = self.latency.labels("tcp")
        self.tcp_connections = Gauge(
            "syncmesh_dns_tcp_connections", "Open DNS-over-TCP connections", registry=registry
        )
        self.transport_errors = Counter(
            "syncmesh_dns_transport_errors",
            "TCP connections closed for cause and socket errors, by reason",
            ["reason"],
            registry=registry,
        )
