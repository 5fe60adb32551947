"""docs/configuration.md is exactly what the config Structs generate, and lists every key."""

from __future__ import annotations

from pathlib import Path

import msgspec.inspect as mi
import pytest

from edge_sync.config import EdgeConfig
from syncmesh_app import configdoc
from syncmesh_app.registry_config import RegistryConfig

pytestmark = pytest.mark.core


def test_committed_configuration_doc_is_up_to_date() -> None:
    assert configdoc.check(), "run: python -m syncmesh_app.configdoc"


def _leaf_keys(info: mi.StructType, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    keys = []
    for field in info.fields:
        t = field.type
        if isinstance(t, mi.StructType):
            keys += _leaf_keys(t, (*path, field.encode_name))
        else:
            keys.append((*path, field.encode_name))
    return keys


@pytest.mark.parametrize(
    ("root", "prefix"), [(EdgeConfig, "SYNCMESH_EDGE"), (RegistryConfig, "SYNCMESH_REGISTRY")]
)
def test_every_key_has_its_environment_name(root: type, prefix: str) -> None:
    text = configdoc.render()
    info = mi.type_info(root)
    assert isinstance(info, mi.StructType)
    for key in _leaf_keys(info):
        env = f"{prefix}__{'__'.join(k.upper() for k in key)}"
        assert f"`{env}`" in text, env


def test_types_defaults_bounds_and_comments() -> None:
    text = configdoc.render()
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if "`rise`" in line}
    rise = lines["`rise`"]
    assert "| int |" in rise and "`2`" in rise and "≥ 1, ≤ 100" in rise
    assert "`SYNCMESH_REGISTRY__PROBE__RISE`" in rise
    assert "Consecutive successes to go up" in rise  # the comment above the field
    cluster = next(line for line in text.splitlines() if line.startswith("| `cluster` |"))
    assert "**required**" in cluster and "1 to 63 characters" in cluster
    assert '"drop" \\| "serve"' in text
    assert "### [[gateways]]" in text and "### [source.consul]" in text


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "configuration.md"
    assert configdoc.main(["--check", "--path", str(path)]) == 1
    assert configdoc.main(["--path", str(path)]) == 0
    assert configdoc.main(["--check", "--path", str(path)]) == 0
    path.write_text(path.read_text().replace("`2.0`", "`3.0`", 1))
    assert configdoc.main(["--check", "--path", str(path)]) == 1
