"""``syncmesh check-config FILE``: 0 for a valid edge or registry file, 2 with the key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncmesh_app.cli import main

pytestmark = pytest.mark.core

EDGE = """\
cluster = "east"
[nats]
servers = ["nats://10.0.0.1:4222"]
[source]
kind = "consul"
[source.consul]
address = "127.0.0.1:8500"
[[gateways]]
address = "203.0.113.10"
port = 15443
"""

REGISTRY = """\
replica = "eu-1"
admin_port = 8080
[dns]
port = 53
[probe]
interval_s = 2.0
rise = 2
"""


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    code = main(["check-config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_valid_edge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _check(tmp_path, EDGE, capsys)
    assert code == 0 and "valid edge config" in out


def test_valid_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _check(tmp_path, REGISTRY, capsys)
    assert code == 0 and "valid registry config" in out


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (REGISTRY.replace("rise = 2", "rise = 0"), "probe.rise"),
        (REGISTRY.replace("port = 53", 'port = "fifty-three"'), "dns.port"),
        (EDGE.replace("port = 15443", "port = 70000"), "gateways[0].port"),
        (EDGE.replace('cluster = "east"', 'cluster = "East_1"'), "cluster"),
    ],
)
def test_a_bad_value_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    code, _, err = _check(tmp_path, text, capsys)
    assert code == 2
    assert f"$.{key}" in err, err


def test_an_unknown_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(tmp_path, REGISTRY.replace("rise = 2", "rise = 2\nrize = 3"), capsys)
    assert code == 2
    assert "rize" in err and "probe" in err, err
    code, _, err = _check(tmp_path, "colour = 1\n" + EDGE, capsys)
    assert code == 2 and "colour" in err


def test_neither_kind_nor_toml_nor_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(tmp_path, "[nats]\n", capsys)
    assert code == 2 and "neither an edge config" in err
    code, _, err = _check(tmp_path, "cluster = \n", capsys)
    assert code == 2 and "cannot read" in err
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
