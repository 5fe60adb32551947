"""Gateway loads on the agent (pure part): the number a source answers, the
gateway's instance in Consul and Nacos answers, the book the beat reads, and
the config rules for load sources."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from edge_sync.config import EdgeConfig, LoadSourceConfig
from edge_sync.core.agent import EdgeCore
from edge_sync.core.load import (
    GatewayLoads,
    LoadError,
    consul_load_text,
    gateway_key,
    nacos_load_text,
    parse_load,
)
from syncmesh.schema import Gateway

pytestmark = pytest.mark.core


@pytest.mark.parametrize(
    ("text", "load"),
    [("42", 42), (" 42.4\n", 42), ("42%", 42), ("42 %", 42), ("0", 0), ("100", 100), ("99.6", 100)],
)
def test_parse_load(text: str, load: int) -> None:
    assert parse_load(text) == load


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "load_malformed"),
        ("busy", "load_malformed"),
        ("4 2", "load_malformed"),
        ("1" * 300, "load_malformed"),
        ("-1", "load_range"),
        ("100.5", "load_range"),
        ("nan", "load_range"),
        ("inf", "load_range"),
    ],
)
def test_parse_load_refuses_anything_but_a_percentage(text: str, reason: str) -> None:
    with pytest.raises(LoadError) as caught:
        parse_load(text)
    assert caught.value.reason == reason


def source(**fields: Any) -> LoadSourceConfig:
    values: dict[str, Any] = {"address": "192.0.2.10", "port": 443, "kind": "consul"}
    values.update(fields)
    return msgspec.convert(values, LoadSourceConfig)


def consul_entry(
    address: str,
    port: int,
    meta: dict[str, str],
    checks: list[dict[str, str]] | None = None,
    **svc: Any,
) -> dict[str, Any]:
    return {
        "Node": {"Node": "n1", "Address": "10.0.0.1"},
        "Service": {
            "ID": svc.pop("ID", "gw"),
            "Address": address,
            "Port": port,
            "Meta": meta,
            **svc,
        },
        "Checks": checks or [],
    }


def test_consul_meta_of_the_instance_at_the_gateway_address_and_port() -> None:
    entries = [
        consul_entry("192.0.2.10", 8443, {"load": "10"}),
        consul_entry("192.0.2.10", 443, {"load": "55"}),
    ]
    assert consul_load_text(entries, source(service="mesh-gateway")) == "55"


def test_consul_tagged_wan_address_or_service_id_finds_the_instance() -> None:
    wan = consul_entry(
        "10.0.0.7",
        443,
        {"load": "61"},
        TaggedAddresses={"wan": {"Address": "192.0.2.10", "Port": 443}},
        ID="gw-east",
    )
    assert consul_load_text([wan], source(service="gw")) == "61"
    elsewhere = consul_entry("10.0.0.7", 9000, {"load": "62"}, ID="gw-east")
    assert consul_load_text([elsewhere], source(service="gw", service_id="gw-east")) == "62"


def test_consul_check_output_including_an_http_checks_prefix() -> None:
    checks = [
        {"CheckID": "serfHealth", "Output": "Agent alive"},
        {"CheckID": "gw-load", "Output": "HTTP GET http://127.0.0.1:9/load: 200 OK Output: 73"},
    ]
    entries = [consul_entry("192.0.2.10", 443, {}, checks)]
    assert parse_load(consul_load_text(entries, source(service="gw", check_id="gw-load"))) == 73


@pytest.mark.parametrize(
    ("entries", "fields", "reason"),
    [
        ([], {}, "load_no_instance"),
        ([consul_entry("192.0.2.11", 443, {"load": "1"})], {}, "load_no_instance"),
        ([consul_entry("192.0.2.10", 443, {})], {}, "load_no_value"),
        ([consul_entry("192.0.2.10", 443, {})], {"check_id": "x"}, "load_no_value"),
        ({"not": "a list"}, {}, "load_malformed"),
    ],
)
def test_consul_answers_without_a_load(entries: Any, fields: dict[str, str], reason: str) -> None:
    with pytest.raises(LoadError) as caught:
        consul_load_text(entries, source(service="gw", **fields))
    assert caught.value.reason == reason


def test_nacos_metadata_of_the_instance_at_the_gateway() -> None:
    reply = {
        "hosts": [
            {"ip": "192.0.2.10", "port": 8443, "metadata": {"load": "5"}},
            {"ip": "192.0.2.10", "port": 443, "metadata": {"load": "88"}},
        ]
    }
    nacos = source(kind="nacos", service="gateway")
    assert nacos_load_text(reply, nacos) == "88"
    with pytest.raises(LoadError, match="load_no_value"):
        nacos_load_text({"hosts": [{"ip": "192.0.2.10", "port": 443}]}, nacos)
    with pytest.raises(LoadError, match="load_no_instance"):
        nacos_load_text({"hosts": []}, nacos)
    with pytest.raises(LoadError, match="load_malformed"):
        nacos_load_text({"error": "x"}, nacos)


# -- the book and the beat -------------------------------------------------------


def edge_config(**fields: Any) -> EdgeConfig:
    values: dict[str, Any] = {
        "cluster": "east",
        "gateways": [
            {"address": "192.0.2.10", "port": 443},
            {"address": "fd00::9", "port": 443, "weight": 50},
        ],
        "load": {
            "sources": [
                {"address": "192.0.2.10", "port": 443, "kind": "file", "path": "/run/load"},
                {"address": "FD00:0::9", "port": 443, "kind": "http", "url": "http://x/load"},
            ]
        },
    }
    values.update(fields)
    return msgspec.convert(values, EdgeConfig)


def test_beat_carries_each_gateways_current_load_and_unknown_after_a_failure() -> None:
    core = EdgeCore(edge_config(), now=0.0)
    assert [g.load for g in core.beat(sent_at=0.0).gateways] == [None, None]
    core.loads.succeeded(gateway_key("192.0.2.10", 443), 40)
    assert not core.loads.succeeded(gateway_key("fd00::9", 443), 90)
    assert [g.load for g in core.beat(sent_at=0.0).gateways] == [40, 90]
    first = core.loads.failed(gateway_key("fd00::9", 443), LoadError("load_timeout", "slow"))
    again = core.loads.failed(gateway_key("fd00::9", 443), LoadError("load_timeout", "slow"))
    other = core.loads.failed(gateway_key("fd00::9", 443), LoadError("load_http_500", "x"))
    assert (first, again, other) == (True, False, True)
    assert [g.load for g in core.beat(sent_at=0.0).gateways] == [40, None]
    assert core.loads.failing == 1
    assert core.loads.succeeded(gateway_key("fd00::9", 443), 20)  # recovered: log it
    assert core.config_problem() is None


def test_gateways_without_a_source_have_no_load() -> None:
    loads = GatewayLoads()
    gateways = [Gateway(address="192.0.2.1", port=1)]
    assert loads.apply(gateways) == gateways


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cluster": "version"}, "reserved"),
        ({"cluster": "tag"}, "reserved"),
        ({"gateways": [{"address": "gw.example.com", "port": 443}]}, "not an IP address"),
        ({"gateways": [{"address": "192.0.2.10", "port": 443, "load": 5}]}, "gateways\\[0\\].load"),
        (
            {
                "load": {
                    "sources": [{"address": "192.0.2.99", "port": 443, "kind": "file", "path": "x"}]
                }
            },
            "not one of \\[\\[gateways\\]\\]",
        ),
        (
            {
                "load": {
                    "sources": [
                        {"address": "192.0.2.10", "port": 443, "kind": "file", "path": "x"},
                        {"address": "192.0.2.10", "port": 443, "kind": "http", "url": "x"},
                    ]
                }
            },
            "a second source",
        ),
        (
            {"load": {"sources": [{"address": "192.0.2.10", "port": 443, "kind": "file"}]}},
            "needs path",
        ),
        (
            {"load": {"sources": [{"address": "192.0.2.10", "port": 443, "kind": "nacos"}]}},
            "needs service",
        ),
    ],
)
def test_config_refuses(fields: dict[str, Any], message: str) -> None:
    values = {"gateways": [{"address": "192.0.2.10", "port": 443}], "load": {}}
    values.update(fields)
    with pytest.raises(msgspec.ValidationError, match=message):
        edge_config(**values)


def test_a_load_moved_by_the_step_since_the_last_beat_asks_for_a_beat_now() -> None:
    core = EdgeCore(edge_config(), now=0.0)
    east, west = gateway_key("192.0.2.10", 443), gateway_key("fd00::9", 443)
    assert not core.loads.moved(5)  # nothing read, nothing announced
    core.loads.succeeded(east, 40)
    assert core.loads.moved(5)  # unknown -> known
    core.beat_message(sent_at=0.0)
    assert not core.loads.moved(5)
    core.loads.succeeded(east, 44)
    assert not core.loads.moved(5)  # less than a step: the next beat is soon enough
    core.loads.succeeded(east, 45)
    assert core.loads.moved(5) and not core.loads.moved(0)  # 0: never early
    core.beat_message(sent_at=1.0)
    core.loads.succeeded(west, 10)
    core.beat_message(sent_at=2.0)
    core.loads.failed(west, LoadError("load_timeout", "slow"))
    assert core.loads.moved(5)  # known -> unknown
    # A beat that was only built (config_problem) announces nothing.
    core.config_problem()
    assert core.loads.moved(5)
