"""The committed JSON Schema files are exactly what the wire Structs generate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from syncmesh.schema import WIRE_TYPES
from syncmesh_app.schemagen import DEFAULT_DIR, check_schemas, main, render_schemas, write_schemas

pytestmark = pytest.mark.core


def test_committed_schemas_are_up_to_date() -> None:
    problems = check_schemas(DEFAULT_DIR)
    assert problems == [], "run: python -m syncmesh_app.schemagen  (" + "; ".join(problems) + ")"


def test_one_file_per_wire_type() -> None:
    assert sorted(p.name for p in DEFAULT_DIR.glob("*.json")) == sorted(
        f"{n}.json" for n in WIRE_TYPES
    )


def test_rendering_is_deterministic_and_valid_json() -> None:
    first, second = render_schemas(), render_schemas()
    assert first == second
    state = json.loads(first["ServiceState.json"])
    assert state["$schema"].endswith("2020-12/schema")
    definition = state["$defs"]["ServiceState"]
    assert {"schema", "cluster", "namespace", "service", "epoch", "revision"} <= set(
        definition["required"]
    )
    assert definition["properties"]["cluster"]["pattern"].startswith("^[a-z0-9]")


def test_check_finds_edited_missing_and_extra_files(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_DIR, tmp_path / "s")
    directory = tmp_path / "s"
    (directory / "ServiceState.json").write_text("{}\n")
    (directory / "Inventory.json").unlink()
    (directory / "Old.json").write_text("{}\n")
    problems = check_schemas(directory)
    assert problems == [
        "Inventory.json: missing",
        "ServiceState.json: out of date",
        "Old.json: not generated from any wire type",
    ]
    assert main(["--check", "--dir", str(directory)]) == 1
    write_schemas(directory)
    assert check_schemas(directory) == []
    assert main(["--check", "--dir", str(directory)]) == 0
