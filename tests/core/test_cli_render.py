"""The operator commands' pure parts: finding NATS, reading names, the tables they print,
the status API's wire form and the status page's matrix, on a scripted view."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from global_registry.config import StaleConfig
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.snapshot import inventory, resolve_reply, status
from global_registry.core.view import RegistryView
from global_registry.io.status_api import status_reply
from global_registry.io.status_page import page_data
from harness.samples import ScriptedStream, cluster_beat, instance, service_state
from syncmesh.configfile import ConfigError
from syncmesh.limits import LimitsConfig
from syncmesh.schema import Gateway, Locality, ResolveRequest, StatusReply, encode
from syncmesh_app.ops import render
from syncmesh_app.ops.target import nats_settings

pytestmark = pytest.mark.core

UP = GatewayStatus(phase=ProbePhase.UP, up=True, rtt_ms=1.5, rtt_bucket=1)


def two_clusters() -> RegistryView:
    """payments: 2 of 3 healthy in east, 1 in west; west's client CIDR 10.20.0.0/16."""
    view = RegistryView(StaleConfig(), LimitsConfig(), Locality(region="us", zone="us-1"))
    stream = ScriptedStream(view)
    for name, region, cidrs, address in (
        ("east", "us", [], "192.0.2.1"),
        ("west", "eu", ["10.20.0.0/16"], "192.0.2.2"),
    ):
        beat = cluster_beat(
            name,
            gateways=[Gateway(address=address, port=443)],
            locality=Locality(region=region, zone=f"{region}-1"),
            client_cidrs=cidrs,
        )
        stream.apply(beat, 0.0)
        view.set_gateway_status(GatewayId(name, address, 443), UP)
    east = [
        instance("a", "10.1.0.1"),
        instance("b", "10.1.0.2", health="warning"),
        instance("c", "10.1.0.3", health="critical"),
    ]
    stream.apply(service_state("east", "payments", instances=east))
    stream.apply(service_state("west", "payments", instances=[instance("w", "10.2.0.1")]))
    stream.apply(service_state("west", "orders", "shop"))
    return view


# -- finding NATS -------------------------------------------------------------


def test_nats_precedence(tmp_path: Path) -> None:
    edge = tmp_path / "edge.toml"
    edge.write_text('cluster = "east"\n[nats]\nservers = ["nats://file:4222"]\ntoken = "t"\n')
    env = {"SYNCMESH_NATS_URL": "nats://env:4222"}
    assert nats_settings(None, None, {}).servers == ["nats://127.0.0.1:4222"]
    assert nats_settings(None, None, env).servers == ["nats://env:4222"]
    assert nats_settings("nats://a:1, nats://b:2", None, env).servers == [
        "nats://a:1",
        "nats://b:2",
    ]
    from_file = nats_settings(None, str(edge), env)
    assert from_file.servers == ["nats://file:4222"] and from_file.token == "t"
    # --nats replaces the file's servers, keeping its credentials.
    both = nats_settings("nats://cli:4222", str(edge), env)
    assert both.servers == ["nats://cli:4222"] and both.token == "t"
    # The file's own environment overrides apply (here: an edge file).
    override = {"SYNCMESH_EDGE__NATS__SERVERS": '["nats://over:4222"]'}
    assert nats_settings(None, str(edge), override).servers == ["nats://over:4222"]


def test_nats_from_a_registry_file_without_servers_falls_back_to_env(tmp_path: Path) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text('replica = "r1"\n[nats]\nuser = "ops"\npassword = "pw"\n')
    settings = nats_settings(None, str(registry), {"SYNCMESH_NATS_URL": "nats://env:4222"})
    assert settings.servers == ["nats://env:4222"] and settings.user == "ops"


def test_bad_nats_table_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[nats]\nservers = "nats://x"\nreplicas = "three"\n')
    with pytest.raises(ConfigError, match="nats"):
        nats_settings(None, str(bad), {})
    with pytest.raises(ConfigError, match="cannot read"):
        nats_settings(None, str(tmp_path / "missing.toml"), {})


# -- names and tables -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("payments", ("payments", "default", None)),
        ("payments.svc.syncmesh.internal", ("payments", "default", None)),
        ("payments.shop.svc.syncmesh.internal.", ("payments", "shop", None)),
        ("east.payments.shop.svc.syncmesh.internal", ("payments", "shop", "east")),
        ("com.example.Inventory", ("com.example.Inventory", "default", None)),
    ],
)
def test_parse_name(name: str, expected: tuple[str, str, str | None]) -> None:
    assert render.parse_name(name, None) == expected


def test_parse_name_keeps_the_namespace_option_for_bare_names() -> None:
    assert render.parse_name("orders", "shop") == ("orders", "shop", None)


def test_table_aligns_columns() -> None:
    assert render.table(["A", "BB"], [["xxx", "y"], ["z", ""]]).splitlines() == [
        "A    BB",
        "xxx  y",
        "z",
    ]


def test_inventory_text() -> None:
    text = render.inventory_text(inventory(two_clusters()))
    assert "2/3" in text and "10.1.0.2:8080(warning)" in text and "10.1.0.3:8080(critical)" in text
    east = next(line for line in text.splitlines() if line.startswith("east "))
    assert "fresh" in east and "192.0.2.1:443" in east and " 1 " in east


def test_resolve_text_for_a_client_in_west_and_for_none() -> None:
    view = two_clusters()
    reply = resolve_reply(view, ResolveRequest(service="payments", client="10.20.1.1"))
    text = render.resolve_text(reply, "10.20.1.1")
    assert "DNS answers 192.0.2.2 (cluster west, client-cidr)" in text
    reply = resolve_reply(view, ResolveRequest(service="payments"))
    text = render.resolve_text(reply, None)
    assert "DNS answers 192.0.2.1 (cluster east, same-zone)" in text
    assert "a client in no cluster's CIDRs" in text


def test_resolve_text_unknown_and_no_candidate() -> None:
    view = two_clusters()
    unknown = resolve_reply(view, ResolveRequest(service="nope"))
    assert "unknown service (DNS: NXDOMAIN)" in render.resolve_text(unknown, None)
    ScriptedStream(view, epoch=1).apply(
        service_state("east", "down", instances=[instance(health="critical")]), seq=10_000
    )
    none = resolve_reply(view, ResolveRequest(service="down"))
    assert none.known and "no candidate cluster" in render.resolve_text(none, None)


def test_status_reply_and_text() -> None:
    view = two_clusters()
    report = status(view, 1.25, "r1", True)
    reply = status_reply(report, "ready")
    # The wire form decodes as the contract's StatusReply.
    decoded = msgspec.json.decode(encode(reply), type=StatusReply)
    assert [c.cluster for c in decoded.clusters] == ["east", "west"]
    assert decoded.clusters[0].gateways[0].state == "up"
    assert decoded.clusters[0].beat_age_s == 1.25
    assert [c.cluster for c in status_reply(report, "ready", "west").clusters] == ["west"]
    text = render.status_text(decoded)
    assert text.startswith("replica r1: ready; stale policy serve")
    assert "192.0.2.1:443" in text and "1.50ms" in text and "1.2s" in text


def test_status_text_shows_why_not_ready_and_stale_clusters() -> None:
    view = two_clusters()
    view.tick(1000.0)
    reply = status_reply(status(view, 1000.0, "r2", False), "not ready: catching up")
    text = render.status_text(reply)
    assert "replica r2: not ready: catching up" in text
    assert "stale (served)" in text


def test_stream_clusters_text_uses_the_beat_send_time() -> None:
    east = inventory(two_clusters()).clusters[0]
    assert east.beat is not None
    sent = msgspec.structs.replace(east, beat=msgspec.structs.replace(east.beat, sent_at=100.0))
    never = msgspec.structs.replace(east, cluster="west", beat=None)
    lines = render.stream_clusters_text([sent, never], 104.0).splitlines()
    assert lines[1].split()[:3] == ["east", "fresh", "4.0s"]
    assert lines[2].split()[:3] == ["west", "fresh", "(no"]


def test_cluster_digest_ignores_revision_and_send_time() -> None:
    inv = inventory(two_clusters())
    east = inv.clusters[0]
    assert east.beat is not None
    later = msgspec.structs.replace(
        east, beat=msgspec.structs.replace(east.beat, revision=99, sent_at=123.0)
    )
    assert render.cluster_digest(later) == render.cluster_digest(east)
    stale = msgspec.structs.replace(east, stale=True)
    assert render.cluster_digest(stale) != render.cluster_digest(east)


# -- the status page's data -----------------------------------------------------


def test_page_matrix_counts_and_answers() -> None:
    view = two_clusters()
    data = page_data(view, status(view, 0.0, "r1", True))
    assert data.clusters == ["east", "west"]
    rows = {(r.namespace, r.service): r for r in data.rows}
    payments = rows[("default", "payments")]
    assert payments.cells["east"].healthy == 2 and payments.cells["east"].instances == 3
    assert payments.cells["west"].healthy == 1
    assert payments.answer == "east" and payments.answer_addresses == ["192.0.2.1"]
    assert "east" not in rows[("shop", "orders")].cells
    west = page_data(view, status(view, 0.0, "r1", True), client="10.20.3.4")
    assert {r.service: r.answer for r in west.rows}["payments"] == "west"


def test_page_filters_limits_and_bad_clients() -> None:
    view = two_clusters()
    report = status(view, 0.0, "r1", True)
    assert [r.service for r in page_data(view, report, namespace="shop").rows] == ["orders"]
    limited = page_data(view, report, limit=1)
    assert len(limited.rows) == 1 and limited.truncated == 1
    bad = page_data(view, report, client="not-an-ip")
    assert bad.client == "" and "not an IP address" in bad.client_error
    assert {r.service: r.answer for r in bad.rows}["payments"] == "east"
