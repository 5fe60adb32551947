"""docs/configuration.md, generated from the config Structs.

``python -m syncmesh_app.configdoc`` writes it; ``--check`` writes nothing and
exits 1 when the committed file differs (``tests/core/test_cli_configdoc.py``
runs the check, so the reference never drifts from ``EdgeConfig`` and
``RegistryConfig``). Every key is listed with its type, default, bounds (from
msgspec ``Meta``), environment variable, and the comment written above the
field in its Struct (read from the source, so the code's comments are the docs).
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

__all__ = ["DEFAULT_PATH", "Document", "documents", "render", "check", "main"]

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
_FIELD = re.compile(r"^\s+(\w+)\s*:")


@dataclass(frozen=True)
class Document:
    title: str
    command: str
    env_prefix: str
    root: type[msgspec.Struct]


def documents() -> list[Document]:
    """What the reference covers: each process's root config Struct."""
    from edge_sync.config import EdgeConfig
    from syncmesh_app.registry_config import RegistryConfig

    return [
        Document("Edge agent", "syncmesh edge --config edge.toml", "SYNCMESH_EDGE", EdgeConfig),
        Document(
            "Registry replica",
            "syncmesh registry --config registry.toml",
            "SYNCMESH_REGISTRY",
            RegistryConfig,
        ),
    ]


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the ``#`` comment lines right above it in the class body."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match and line.startswith("    ") and not line.startswith("     "):
            if pending:
                comments.setdefault(match.group(1), " ".join(pending))
        pending = []
    return comments


def _doc(cls: type) -> str:
    text = inspect.getdoc(cls) or ""
    # Struct's own docstring is not documentation of a config table.
    return "" if text == inspect.getdoc(msgspec.Struct) else " ".join(text.split())


def type_name(t: mi.Type) -> str:
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.IntType):
        return "int"
    if isinstance(t, mi.FloatType):
        return "float"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.LiteralType):
        return " \\| ".join(json.dumps(v) for v in t.values)
    if isinstance(t, mi.ListType):
        return f"list of {type_name(t.item_type)}"
    if isinstance(t, mi.DictType):
        return f"table of {type_name(t.value_type)}"
    if isinstance(t, mi.StructType):
        return "table"
    if isinstance(t, mi.UnionType):
        return " or ".join(type_name(x) for x in t.types)
    if isinstance(t, mi.NoneType):
        return "none"
    return type(t).__name__.removesuffix("Type").lower()


def bounds(t: mi.Type) -> str:
    parts = []
    if isinstance(t, mi.IntType | mi.FloatType):
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(t, attr)
            if value is not None:
                parts.append(f"{sign} {value}")
        if t.multiple_of is not None:
            parts.append(f"multiple of {t.multiple_of}")
    if isinstance(t, mi.StrType | mi.ListType | mi.DictType):
        unit = "characters" if isinstance(t, mi.StrType) else "items"
        low, high = t.min_length, t.max_length
        if low is not None and high is not None:
            parts.append(f"{low} to {high} {unit}")
        elif low is not None:
            parts.append(f"at least {low} {unit}")
        elif high is not None:
            parts.append(f"at most {high} {unit}")
    if isinstance(t, mi.StrType) and t.pattern is not None:
        parts.append(f"matches `{t.pattern}`")
    if isinstance(t, mi.ListType):
        inner = bounds(t.item_type)
        if inner:
            parts.append(f"each {inner}")
    return ", ".join(parts)


def default(field: mi.Field) -> str:
    if field.required:
        return "**required**"
    value: Any = field.default
    if value is msgspec.NODEFAULT:
        value = field.default_factory()
    if isinstance(value, msgspec.Struct):
        return "(table)"
    return f"`{json.dumps(msgspec.to_builtins(value))}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if "\\|" not in text else text


def _sections(
    info: mi.StructType, path: tuple[str, ...], array: bool
) -> Iterator[tuple[tuple[str, ...], bool, mi.StructType]]:
    """Depth first: this table, then its nested tables and arrays of tables."""
    yield path, array, info
    for field in info.fields:
        t = field.type
        if isinstance(t, mi.StructType):
            yield from _sections(t, (*path, field.encode_name), False)
        elif isinstance(t, mi.ListType) and isinstance(t.item_type, mi.StructType):
            yield from _sections(t.item_type, (*path, field.encode_name), True)


def _document(doc: Document) -> list[str]:
    info = mi.type_info(doc.root)
    assert isinstance(info, mi.StructType)
    out = [
        f"## {doc.title}",
        "",
        f"`{doc.command}` (`{doc.root.__module__}.{doc.root.__qualname__}`). "
        f"Environment: `{doc.env_prefix}__<TABLE>__<KEY>`.",
        "",
    ]
    for path, array, table in _sections(info, (), False):
        name = ".".join(path)
        heading = "top level" if not path else (f"[[{name}]]" if array else f"[{name}]")
        out.append(f"### {heading}")
        out.append("")
        about = _doc(table.cls)
        if about:
            out += [about, ""]
        comments = field_comments(table.cls)
        out.append("| key | type | default | bounds | environment | notes |")
        out.append("|---|---|---|---|---|---|")
        for field in table.fields:
            if isinstance(field.type, mi.StructType):
                continue  # its own section
            t = field.type
            nested_array = isinstance(t, mi.ListType) and isinstance(t.item_type, mi.StructType)
            key = ".".join((*path, field.encode_name))
            # Inside an array of tables a key has no single environment variable.
            env = (
                "—"
                if array
                else f"`{doc.env_prefix}__{'__'.join(p.upper() for p in (*path, field.encode_name))}`"
            )
            kind = f"array of tables `[[{key}]]`" if nested_array else type_name(t)
            note = comments.get(field.name, "")
            out.append(
                f"| `{field.encode_name}` | {_cell(kind)} | {_cell(default(field))} | "
                f"{_cell(bounds(t))} | {env} | {_cell(note)} |"
            )
        out.append("")
    return out


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m syncmesh_app.configdoc` from the config Structs; "
        "do not edit by hand (`--check` fails in CI when this file is stale). -->",
        "",
        "Both processes read one TOML file (`--config`); every key is optional unless marked",
        "**required**, and an unknown key or a value out of bounds is an error that names the key",
        "(`syncmesh check-config FILE` exits 2 with the key and the reason). Every key can be",
        "overridden from the environment: the prefix, then the table path and the key, upper",
        "case, with a double underscore between levels, e.g. `SYNCMESH_REGISTRY__DNS__PORT=53`.",
        "Environment values are read as TOML values when they parse (`53`, `true`,",
        '`["nats://a:4222","nats://b:4222"]`), else as strings. Keys inside arrays of tables',
        "(`[[gateways]]`) have no environment variable: set the whole array in the file.",
        "",
        "The operator commands (`syncmesh inventory | resolve | status`) read only the `[nats]`",
        "table of either file (see docs/cli.md).",
        "",
    ]
    for doc in documents():
        lines += _document(doc)
    return "\n".join(lines).rstrip() + "\n"


def check(path: Path = DEFAULT_PATH) -> bool:
    return path.exists() and path.read_text() == render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m syncmesh_app.configdoc", description=__doc__)
    parser.add_argument("--check", action="store_true", help="verify, write nothing")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    if args.check:
        if check(args.path):
            print(f"{args.path} is up to date")
            return 0
        print(f"{args.path} is out of date: run python -m syncmesh_app.configdoc", file=sys.stderr)
        return 1
    args.path.write_text(render())
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
