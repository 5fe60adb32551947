"""The example configs in compose/ load as they are (they are documentation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sync.config import EdgeConfig
from syncmesh.configfile import load_config
from syncmesh_app.cli import main
from syncmesh_app.registry_config import RegistryConfig

pytestmark = pytest.mark.core
COMPOSE = Path(__file__).resolve().parents[2] / "compose"


@pytest.mark.parametrize("name", ["edge-consul.toml", "edge-nacos.toml", "edge-file.toml"])
def test_edge_examples_load(name: str) -> None:
    config = load_config(COMPOSE / name, EdgeConfig, "SYNCMESH_EDGE", environ={})
    assert config.gateways and config.cluster


def test_registry_example_loads() -> None:
    config = load_config(COMPOSE / "registry.toml", RegistryConfig, "SYNCMESH_REGISTRY", environ={})
    assert config.dns.zone == "syncmesh.internal."


def test_cli_rejects_bad_config_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "edge.toml"
    bad.write_text('cluster = "East_1"\n')
    assert main(["edge", "--config", str(bad)]) == 2
    assert "cluster" in capsys.readouterr().err
    bad.write_text('cluster = "east"\n[source]\nkind = "zookeeper"\n')
    assert main(["edge", "--config", str(bad)]) == 2
    assert "source.kind" in capsys.readouterr().err
