"""deploy/monitoring: the alert rules parse, and every metric (and label matcher) they and
the Grafana dashboard use exists in the /metrics of a real running registry and agent."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import pytest
import yaml

from dns_server.config import DnsConfig
from edge_sync.config import EdgeConfig, FileSourceConfig, SourceConfig
from global_registry.config import ProbeConfig
from harness.nats_peer import NatsPeer
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import Gateway
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig

pytestmark = pytest.mark.peers

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
_SELECTOR = re.compile(r"\b(syncmesh_[a-z0-9_]+)\b(?:\{([^}]*)\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"([^\"]*)\"")


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def test_rules_are_well_formed() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert isinstance(rule["expr"], str) and "syncmesh_" in rule["expr"]
        labels = rule["labels"]
        assert isinstance(labels, dict) and labels["severity"] in ("warning", "critical")
        annotations = rule["annotations"]
        assert isinstance(annotations, dict) and annotations["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", str(rule["for"]))
    # What the brief asks to be alerted on.
    expressions = " ".join(str(r["expr"]) for r in rules)
    for metric in (
        "syncmesh_registry_clusters",
        "syncmesh_registry_gateway_up",
        "syncmesh_registry_rejected_messages_total",
        'syncmesh_dns_queries_total{rcode="SERVFAIL"}',
        "syncmesh_registry_ready",
    ):
        assert metric in expressions, metric


def _parse_exposition(text: str) -> dict[str, set[str]]:
    """Metric name -> label names seen, from samples and from ``# TYPE`` lines (a family
    with no sample yet, such as DNS queries by rcode before any query, still counts)."""
    metrics: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names = [name]
            if kind == "histogram":
                names += [f"{name}_bucket", f"{name}_count", f"{name}_sum"]
            for n in names:
                metrics.setdefault(n, set())
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            name = name.split(" ")[0]
            labels = {m.split("=")[0] for m in re.findall(r'(\w+)="', rest)} if rest else set()
            metrics.setdefault(name, set()).update(labels)
    return metrics


def _selectors(expr: str) -> Iterator[tuple[str, list[str]]]:
    for match in _SELECTOR.finditer(expr):
        yield match.group(1), [m[0] for m in _MATCHER.findall(match.group(2) or "")]


async def _scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def test_every_metric_referenced_exists(nats_peer: NatsPeer, tmp_path: Path) -> None:
    services = tmp_path / "services.toml"
    services.write_text(
        '[[services]]\nname = "web"\n[[services.instances]]\naddress = "10.0.0.1"\nport = 80\n'
    )
    nats = NatsConfig(servers=[nats_peer.url])
    edge = EdgeConfig(
        cluster="east",
        nats=nats,
        source=SourceConfig(kind="file", file=FileSourceConfig(path=str(services))),
        gateways=[Gateway(address="127.0.0.1", port=9)],  # nothing listens: probed down
        metrics_port=-1,
        beat_interval_s=0.5,
    )
    registry = RegistryConfig(
        nats=nats,
        admin_port=0,
        dns=DnsConfig(port=0),
        probe=ProbeConfig(interval_s=0.2, timeout_s=0.2, rise=1, fall=1),
    )
    async with EdgeAgent(edge) as agent:
        await agent.wait_synced()
        async with RegistryApp(registry) as app:
            await app.wait_ready()
            assert app.dns_port
            query = dns.message.make_query("web.svc.syncmesh.internal", "A")
            await dns.asyncquery.udp(query, "127.0.0.1", port=app.dns_port, timeout=2)
            scraped = _parse_exposition(await _scrape(f"http://127.0.0.1:{app.admin_port}/metrics"))
        edge_metrics = _parse_exposition(
            await _scrape(f"http://127.0.0.1:{agent.metrics_port}/metrics")
        )
    for name, labels in edge_metrics.items():
        scraped.setdefault(name, set()).update(labels)

    sources = [("alerts.yml " + str(r["alert"]), str(r["expr"])) for r in _rules()]
    sources += [("grafana-dashboard.json", e) for e in _dashboard_exprs()]
    missing = []
    for where, expr in sources:
        for metric, matchers in _selectors(expr):
            if metric not in scraped:
                missing.append(f"{where}: {metric}")
                continue
            seen = scraped[metric]
            missing += [
                f"{where}: {metric}{{{label}}}" for label in matchers if seen and label not in seen
            ]
    assert not missing, "not in the real /metrics output:\n" + "\n".join(missing)
    # The labels the alert annotations print exist on the gateway metric.
    assert {"cluster", "address", "port"} <= scraped["syncmesh_registry_gateway_up"]
