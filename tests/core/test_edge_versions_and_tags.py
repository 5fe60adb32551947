"""Instance versions and tags from every source (issue 14): Consul meta and tags,
Nacos metadata, the service file; what the wire cannot carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from edge_sync.core.consul_mapping import map_health_entries, version_of
from edge_sync.core.model import carried_subset
from edge_sync.core.nacos import map_instances as map_nacos_instances
from edge_sync.core.service_file import ServiceFileError, parse_service_file
from syncmesh.schema import Instance

pytestmark = pytest.mark.core


@pytest.mark.parametrize(
    ("meta", "tags", "version"),
    [
        ({"version": "1.4.2"}, ["v9", "version=8"], "1.4.2"),  # meta first
        ({}, ["eu", "version=2024.06", "v9"], "2024.06"),  # then version=<x>
        ({}, ["eu", "v2.0.0-rc.1", "v3"], "v2.0.0-rc.1"),  # then the first v<semver>, as written
        ({}, ["v1"], "v1"),
        ({}, ["vip", "v1.2.3.4", "version="], ""),  # not a version tag
        (None, [], ""),
    ],
)
def test_consul_version_rule(meta: Any, tags: list[str], version: str) -> None:
    assert version_of(meta, tags) == version


def consul_entry(meta: dict[str, str], tags: Any) -> dict[str, Any]:
    return {
        "Node": {"Node": "n1", "Address": "10.9.9.9"},
        "Service": {"ID": "web-1", "Service": "web", "Port": 80, "Meta": meta, "Tags": tags},
        "Checks": [],
    }


def test_consul_instance_carries_version_and_tags() -> None:
    by_namespace, _, rejects = map_health_entries(
        "web", [consul_entry({"version": "1.2.3"}, ["canary", "eu", "canary"])]
    )
    (instance,) = by_namespace["default"]
    assert (instance.version, instance.tags, rejects) == ("1.2.3", ["canary", "eu"], [])


def test_consul_tags_the_wire_cannot_carry_are_left_out_not_the_instance() -> None:
    long_tag = "traefik.http.routers.web.rule=Host(`web.example.com`) && PathPrefix(`/api`)"
    tags = [long_tag, "", "ok", *[f"t{n}" for n in range(100)]]
    by_namespace, _, rejects = map_health_entries(
        "web", [consul_entry({"version": "x" * 64}, tags)]
    )
    (instance,) = by_namespace["default"]
    assert not rejects
    assert instance.version == ""
    assert instance.tags[0] == "ok" and len(instance.tags) == 64 and long_tag not in instance.tags
    # What goes on the wire passes the schema.
    assert Instance(**{"id": "x", "address": "10.0.0.1", "port": 1, **carried_subset("", tags)})


def test_consul_malformed_tags_are_ignored() -> None:
    by_namespace, _, _ = map_health_entries("web", [consul_entry({}, "not-a-list")])
    (instance,) = by_namespace["default"]
    assert instance.tags == [] and instance.version == ""


@dataclass
class SdkInstance:
    ip: str = "10.0.0.1"
    port: int = 80
    clusterName: str = "DEFAULT"
    healthy: bool = True
    enabled: bool = True
    weight: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)


def test_nacos_version_and_comma_separated_tags_from_metadata() -> None:
    (instance,), _ = map_nacos_instances(
        "web", [SdkInstance(metadata={"version": "2.0.0", "tags": "canary, eu,,canary "})]
    )
    assert (instance.version, instance.tags) == ("2.0.0", ["canary", "eu"])
    assert instance.meta["tags"] == "canary, eu,,canary "
    (plain,), _ = map_nacos_instances("web", [SdkInstance()])
    assert (plain.version, plain.tags) == ("", [])


def test_service_file_version_and_tags() -> None:
    data = b"""
[[services]]
name = "orders"
[[services.instances]]
address = "10.0.0.5"
port = 8080
version = "2.1.0"
tags = ["canary", "eu"]
"""
    [service] = parse_service_file(data, "toml")
    (instance,) = service.instances
    assert (instance.version, instance.tags) == ("2.1.0", ["canary", "eu"])


def test_service_file_with_an_overlong_version_is_refused() -> None:
    data = (
        b'[[services]]\nname = "orders"\n[[services.instances]]\naddress = "10.0.0.5"\n'
        b'port = 8080\nversion = "' + b"9" * 64 + b'"\n'
    )
    with pytest.raises(ServiceFileError) as caught:
        parse_service_file(data, "toml")
    assert caught.value.reason == "instance"
