"""Edge config validation and env overrides; token bucket and log limiter with scripted time."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sync.config import EdgeConfig
from edge_sync.core.ratelimit import TokenBucket
from syncmesh.configfile import ConfigError, load_config
from syncmesh.loggate import LogGate

pytestmark = pytest.mark.core

GOOD = """
cluster = "east"
beat_interval_s = 1.5
client_cidrs = ["10.0.0.0/8"]
[nats]
servers = ["nats://127.0.0.1:4222"]
[source]
kind = "consul"
[source.consul]
address = "127.0.0.1:8500"
token = "secret"
max_connections = 40
[[gateways]]
address = "192.0.2.10"
port = 443
[locality]
region = "eu"
"""


def test_full_config_loads_with_env_override(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(GOOD)
    cfg = load_config(
        path,
        EdgeConfig,
        "SYNCMESH_EDGE",
        environ={"SYNCMESH_EDGE__SOURCE__CONSUL__DATACENTER": "dc2"},
    )
    assert cfg.cluster == "east" and cfg.source.kind == "consul"
    assert cfg.source.consul.max_connections == 40 and cfg.source.consul.datacenter == "dc2"
    assert cfg.gateways[0].port == 443 and cfg.locality.region == "eu"
    assert cfg.source.file.poll_interval_s == 0.2 and cfg.source.nacos.groups == ["DEFAULT_GROUP"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('cluster = "East"', "$.cluster"),
        (
            'cluster = "e"\n[source.consul]\nmax_connections = 200',
            "$.source.consul.max_connections",
        ),
        ('cluster = "e"\n[source.consul]\nfetch_concurrency = 47', "max_connections"),
        ('cluster = "e"\n[source]\nkind = "eureka"', "$.source.kind"),
        ('cluster = "e"\nclient_cidrs = ["10.0.0.0/33"]', "client_cidrs[0]"),
        # Host bits set: the registry's parse_cidr refuses it, so the agent does too.
        ('cluster = "e"\nclient_cidrs = ["10.0.0.0/8", "10.1.2.3/16"]', "client_cidrs[1]"),
        (
            'cluster = "e"\n[[gateways]]\naddress = "gw.example.com"\nport = 443',
            "gateways[0].address",
        ),
        (
            'cluster = "e"\nclient_cidrs = ["10.0.0.0/8", "11.0.0.0/8"]\n[limits]\nmax_client_cidrs = 1',
            "limits.max_client_cidrs",
        ),
        ('cluster = "e"\n[[gateways]]\naddress = "1.2.3.4"\nport = 70000', "$.gateways[0].port"),
        ('cluster = "e"\nbeat_interval = 2', "beat_interval"),
    ],
)
def test_bad_values_name_the_key_and_reason(tmp_path: Path, body: str, needle: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path, EdgeConfig, "SYNCMESH_EDGE", environ={})
    assert needle in str(err.value)


def test_cli_refuses_a_config_the_registry_would_reject_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncmesh_app.cli import main

    path = tmp_path / "edge.toml"
    path.write_text('cluster = "east"\nclient_cidrs = ["10.1.2.3/16"]\n')
    assert main(["edge", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "client_cidrs[0]" in err and "10.1.2.3/16" in err and "host bits" in err


def test_token_bucket_refills_with_the_callers_clock() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.try_take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.delay(0.0) == pytest.approx(0.5)
    assert bucket.try_take(0.5)
    assert not bucket.try_take(0.5)
    assert bucket.try_take(100.0) and bucket.try_take(100.0) and bucket.try_take(100.0)
    assert not bucket.try_take(100.0)  # never more than the burst saved up


def test_log_gate_logs_each_reason_once_per_period_and_counts_the_rest() -> None:
    gate = LogGate(period_s=60.0, max_keys=3)
    assert gate.allow("a", 0.0) == (True, 0)
    assert gate.allow("a", 30.0) == (False, 0)
    assert gate.allow("b", 30.0)[0]
    assert gate.allow("a", 60.0) == (True, 1), "the suppressed repeat is reported"
    for reason in ("c", "d", "e"):  # attacker-chosen reasons cannot grow memory without bound
        gate.allow(reason, 61.0)
    assert len(gate._last) <= 3
