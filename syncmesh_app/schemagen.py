"""JSON Schema files for consumers in other languages, generated from the wire Structs.

``python -m syncmesh_app.schemagen`` writes ``schemas/<Type>.json`` for every Struct
in ``syncmesh.schema.WIRE_TYPES``; ``--check`` writes nothing and exits 1 when a
committed file is missing, different or no longer generated (CI and
``tests/core/test_schemas.py`` run it, so the files never drift from the Structs).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from syncmesh.schema import SCHEMA_VERSION, WIRE_TYPES

__all__ = ["DEFAULT_DIR", "render_schemas", "write_schemas", "check_schemas", "main"]

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "schemas"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_ID_BASE = f"urn:syncmesh:schema:v{SCHEMA_VERSION}:"


def _normalise(node: Any) -> Any:
    """Descriptions as ``inspect.cleandoc`` gives them: msgspec releases differ in how
    they dedent docstrings, and the committed files must not depend on which one ran."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _normalise(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    return node


def render_schemas() -> dict[str, str]:
    """File name -> file text, deterministic (sorted keys, trailing newline)."""
    out: dict[str, str] = {}
    for name, struct in sorted(WIRE_TYPES.items()):
        schema = _normalise(msgspec.json.schema(struct))
        document = {
            "$schema": _DIALECT,
            "$id": f"{_ID_BASE}{name}",
            "title": name,
            "x-syncmesh-schema-version": SCHEMA_VERSION,
            **schema,
        }
        out[f"{name}.json"] = (
            json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        )
    return out


def write_schemas(directory: Path = DEFAULT_DIR) -> list[str]:
    """Write every schema file and remove stale ones; returns the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for stale in sorted(set(p.name for p in directory.glob("*.json")) - set(rendered)):
        (directory / stale).unlink()
    for name, text in rendered.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return sorted(rendered)


def check_schemas(directory: Path = DEFAULT_DIR) -> list[str]:
    """Problems with the committed files (empty when they are up to date)."""
    rendered = render_schemas()
    problems = []
    for name, text in rendered.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_text() != text:
            problems.append(f"{name}: out of date")
    for extra in sorted(set(p.name for p in directory.glob("*.json")) - set(rendered)):
        problems.append(f"{extra}: not generated from any wire type")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m syncmesh_app.schemagen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="verify, write nothing")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        problems = check_schemas(args.dir)
        for problem in problems:
            print(f"schemas out of date: {problem}", file=sys.stderr)
        if problems:
            print("run: python -m syncmesh_app.schemagen", file=sys.stderr)
            return 1
        print(f"{len(WIRE_TYPES)} schema files up to date in {args.dir}")
        return 0
    names = write_schemas(args.dir)
    print(f"wrote {len(names)} schema files to {args.dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
