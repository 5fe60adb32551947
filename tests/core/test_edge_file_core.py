"""The service file: parsing, validation with clear reasons, and when it is re-read."""

from __future__ import annotations

import pytest

from edge_sync.core.service_file import (
    MAX_FILE_BYTES,
    FileStamp,
    FileWatch,
    ServiceFileError,
    parse_service_file,
)

pytestmark = pytest.mark.core

TOML = b"""
[[services]]
name = "orders"
[[services.instances]]
address = "10.0.0.1"
port = 8080
[[services.instances]]
id = "orders-b"
address = "10.0.0.2"
port = 8080
health = "warning"
weight = 0
zone = "z1"
meta = { version = "2" }

[[services]]
name = "com.foo.Bar"
namespace = "payments"
"""

YAML = b"""
services:
  - name: orders
    instances:
      - {address: 10.0.0.1, port: 8080}
"""


def test_toml_file_parses_with_default_ids() -> None:
    services = {s.name: s for s in parse_service_file(TOML, "toml")}
    orders = services["orders"]
    assert orders.namespace == "default"
    assert [i.id for i in orders.instances] == ["10.0.0.1:8080", "orders-b"]
    b = orders.instances[1]
    assert (b.health, b.weight, b.zone, b.meta) == ("warning", 0, "z1", {"version": "2"})
    bar = services["com.foo.Bar"]
    assert bar.namespace == "payments" and bar.instances == () and bar.source_name == "com.foo.Bar"


def test_yaml_file_parses_the_same_shape() -> None:
    [orders] = parse_service_file(YAML, "yaml")
    assert orders.instances[0].address == "10.0.0.1"
    assert parse_service_file(b"", "yaml") == []


@pytest.mark.parametrize(
    ("data", "reason", "needle"),
    [
        (b"[[services]\nname=", "syntax", "TOML"),
        (b"services = [{name = 'a', colour = 'red'}]", "schema", "colour"),
        (
            b"services = [{name = 'a', instances = [{address = '1.1.1.1', port = 0}]}]",
            "instance",
            "port",
        ),
        (
            b"services = [{name = 'a', instances = [{address = '1.1.1.1', port = 'x'}]}]",
            "schema",
            "port",
        ),
        (b"services = [{name = 'a', namespace = 'Not A Label'}]", "namespace", "Not A Label"),
        (b"services = [{name = 'a'}, {name = 'a'}]", "duplicate_service", "twice"),
        (
            b"services = [{name = 'a', instances = [{address = '1.1.1.1', port = 1}, {address = '1.1.1.1', port = 1}]}]",
            "duplicate_instance",
            "1.1.1.1:1",
        ),
        (b"\xff\xfe", "encoding", "UTF-8"),
    ],
)
def test_bad_files_are_rejected_with_a_reason_that_names_the_problem(
    data: bytes, reason: str, needle: str
) -> None:
    with pytest.raises(ServiceFileError) as err:
        parse_service_file(data, "toml")
    assert err.value.reason == reason
    assert needle in str(err.value)


def test_bad_yaml_and_oversized_files() -> None:
    with pytest.raises(ServiceFileError) as err:
        parse_service_file(b"services: [unclosed", "yaml")
    assert err.value.reason == "syntax"
    with pytest.raises(ServiceFileError) as err:
        parse_service_file(b" " * (MAX_FILE_BYTES + 1), "toml")
    assert err.value.reason == "oversized"


def test_watch_reads_on_stat_change_or_periodically_and_parses_only_new_content() -> None:
    watch = FileWatch(rehash_interval_s=2.0)
    s1 = FileStamp(1, 10)
    assert watch.should_read(s1, now=0.0)
    assert watch.content_read(s1, b"a", now=0.0)
    assert not watch.should_read(s1, now=0.2)
    assert watch.should_read(FileStamp(2, 10), now=0.4)
    assert watch.should_read(s1, now=2.0)  # same stamp, but time for a re-hash
    assert not watch.content_read(s1, b"a", now=2.0)  # same bytes: nothing to parse
    assert watch.content_read(s1, b"b", now=2.2)  # same stamp, new bytes: caught by the hash
    assert not watch.should_read(None, now=10.0)
    assert watch.file_missing() and not watch.file_missing()  # reported once
