"""The ``syncmesh`` command: ``edge``, ``registry``, ``demo``, ``check-config``, ``schemas``,
``nats-permissions``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from syncmesh.configfile import ConfigError, load_config

__all__ = ["main"]

log = logging.getLogger("syncmesh")


def _run(coro: Coroutine[Any, Any, None]) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at run time
        pass
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        return 0
    return 0


def _edge(args: argparse.Namespace) -> int:
    from edge_sync.config import EdgeConfig
    from syncmesh_app.edge import run_edge

    config = load_config(args.config, EdgeConfig, "SYNCMESH_EDGE")
    return _run(run_edge(config))


def _registry(args: argparse.Namespace) -> int:
    from syncmesh_app.registry import run_registry
    from syncmesh_app.registry_config import RegistryConfig

    config = load_config(args.config, RegistryConfig, "SYNCMESH_REGISTRY")
    return _run(run_registry(config))


def _demo(args: argparse.Namespace) -> int:
    from syncmesh_app.demo import DemoOptions, run_demo

    options = DemoOptions(
        workdir=args.workdir,
        dns_port=args.dns_port,
        admin_port=args.admin_port,
    )
    return _run(run_demo(options))


def _schemas(args: argparse.Namespace) -> int:
    from syncmesh_app import schemagen

    return schemagen.main(["--check"] if args.check else [])


def _nats_permissions(args: argparse.Namespace) -> int:
    from syncmesh import permissions

    return permissions.main([args.kind, args.name])


def _check_config(args: argparse.Namespace) -> int:
    """Exit 0 for a valid edge or registry config; 2 with the key and the reason."""
    import tomllib
    from pathlib import Path

    try:
        data = tomllib.loads(Path(args.file).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{args.file}: cannot read: {exc}") from exc
    if "cluster" in data:
        from edge_sync.config import EdgeConfig

        load_config(args.file, EdgeConfig, "SYNCMESH_EDGE")
        kind = "edge"
    elif "replica" in data:
        from syncmesh_app.registry_config import RegistryConfig

        load_config(args.file, RegistryConfig, "SYNCMESH_REGISTRY")
        kind = "registry"
    else:
        raise ConfigError(
            f"{args.file}: neither an edge config (needs `cluster`) nor a registry config "
            "(needs `replica`)"
        )
    print(f"{args.file}: valid {kind} config")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncmesh", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    edge = sub.add_parser("edge", help="run the per-cluster agent")
    edge.add_argument("--config", required=False, help="edge.toml (env SYNCMESH_EDGE__* overrides)")
    edge.set_defaults(func=_edge)

    reg = sub.add_parser("registry", help="run the global registry with DNS and admin HTTP")
    reg.add_argument("--config", required=False, help="registry.toml (env SYNCMESH_REGISTRY__*)")
    reg.set_defaults(func=_registry)

    demo = sub.add_parser("demo", help="embedded NATS, two file-source clusters, registry, DNS")
    demo.add_argument("--workdir", default=None, help="folder for service files and NATS data")
    demo.add_argument("--dns-port", type=int, default=1053)
    demo.add_argument("--admin-port", type=int, default=8080)
    demo.set_defaults(func=_demo)

    schemas = sub.add_parser("schemas", help="write (or --check) schemas/*.json")
    schemas.add_argument("--check", action="store_true")
    schemas.set_defaults(func=_schemas)

    perms = sub.add_parser("nats-permissions", help="NATS permissions for an agent or a replica")
    perms.add_argument("kind", choices=["agent", "registry", "consumer"])
    perms.add_argument("name", help="the agent's cluster, the replica's name, or - for a consumer")
    perms.set_defaults(func=_nats_permissions)

    check = sub.add_parser("check-config", help="validate an edge or registry config file")
    check.add_argument("file")
    check.set_defaults(func=_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"syncmesh: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
