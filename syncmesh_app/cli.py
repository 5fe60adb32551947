"""The ``syncmesh`` command.

Processes: ``edge``, ``registry``, ``demo``. Operator tools, all through NATS:
``inventory``, ``resolve``, ``status``; ``audit`` (a source against NATS). Files:
``check-config``, ``schemas``, ``nats-permissions``. Exit status: 0 ok, 1 not found /
no answer (``audit``: drift), 2 usage or config error. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from syncmesh.configfile import ConfigError, load_config
from syncmesh_app.ops import logs, process
from syncmesh_app.ops.errors import NoAnswer

__all__ = ["main", "build_parser"]

log = logging.getLogger("syncmesh")


def _run(coro: Coroutine[Any, Any, int | None], name: str) -> int:
    """Run until done or until SIGTERM / SIGINT stops it cleanly (exit 0)."""
    return process.run(coro, name)


# `syncmesh edge` exit status when a newer agent claimed the cluster.
EXIT_DEPOSED = 3


def _edge(args: argparse.Namespace) -> int:
    from edge_sync.config import EdgeConfig
    from syncmesh_app.edge import AgentDeposed, run_edge, tune_gc

    config = load_config(args.config, EdgeConfig, "SYNCMESH_EDGE")
    tune_gc()
    try:
        return _run(run_edge(config), f"edge {config.cluster}")
    except AgentDeposed as exc:
        # Another agent owns the cluster now: not a crash. A supervisor should not
        # restart at once (systemd: RestartPreventExitStatus=3).
        log.error("edge %s: %s", config.cluster, exc)
        return EXIT_DEPOSED


def _registry(args: argparse.Namespace) -> int:
    from syncmesh_app.registry import run_registry
    from syncmesh_app.registry_config import RegistryConfig

    config = load_config(args.config, RegistryConfig, "SYNCMESH_REGISTRY")
    return _run(run_registry(config), f"registry {config.replica}")


def _demo(args: argparse.Namespace) -> int:
    from syncmesh_app.demo import DemoOptions, run_demo

    options = DemoOptions(
        workdir=args.workdir,
        dns_port=args.dns_port,
        admin_port=args.admin_port,
    )
    return _run(run_demo(options), "demo")


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

    from syncmesh_app.ops.target import config_kind

    try:
        data = tomllib.loads(Path(args.file).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{args.file}: cannot read: {exc}") from exc
    kind = config_kind(data)
    if kind == "edge":
        from edge_sync.config import EdgeConfig

        load_config(args.file, EdgeConfig, "SYNCMESH_EDGE")
    elif kind == "registry":
        from syncmesh_app.registry_config import RegistryConfig

        load_config(args.file, RegistryConfig, "SYNCMESH_REGISTRY")
    else:
        raise ConfigError(
            f"{args.file}: neither an edge config (needs `cluster`) nor a registry config "
            "(needs `replica`)"
        )
    print(f"{args.file}: valid {kind} config")
    return 0


# -- operator tools (through NATS) ----------------------------------------------


def _options(args: argparse.Namespace) -> Any:
    from syncmesh_app.ops.commands import Options
    from syncmesh_app.ops.target import nats_settings

    return Options(
        nats=nats_settings(args.nats, args.config), timeout_s=args.timeout, json=args.json
    )


def _inventory(args: argparse.Namespace) -> int:
    from syncmesh_app.ops import commands

    opts = _options(args)
    coro = commands.inventory(opts, args.cluster, args.namespace, args.watch, args.via)
    return _run(coro, "inventory")


def _retire_cluster(args: argparse.Namespace) -> int:
    from syncmesh_app.retire import retire_cluster

    opts = _options(args)

    async def main() -> int:
        report = await retire_cluster(opts, args.name, args.ttl, dry_run=not args.yes)
        verb = "would tombstone" if not args.yes else "tombstoned"
        if opts.json:
            import json

            opts.emit(
                json.dumps(
                    {
                        "cluster": report.cluster,
                        "epoch": report.epoch,
                        "retired": bool(args.yes),
                        "services": report.tombstoned,
                    }
                )
            )
        else:
            opts.emit(
                f"cluster {report.cluster}: {verb} {len(report.tombstoned)} services "
                f"({report.already_deleted} already deleted)"
            )
            for name in report.tombstoned:
                opts.emit(f"  {name}")
            if args.yes:
                opts.emit(
                    f"retired at epoch {report.epoch}; tombstones leave the stream "
                    f"after {args.ttl}s"
                )
            else:
                opts.emit("dry run: add --yes to retire the cluster")
        return 0

    return _run(main(), "retire-cluster")


def _resolve(args: argparse.Namespace) -> int:
    from syncmesh_app.ops import commands

    opts = _options(args)
    coro = commands.resolve(
        opts,
        args.name,
        args.namespace,
        args.client,
        args.cluster,
        args.zone,
        version=args.version,
        tags=args.tag,
    )
    return _run(coro, "resolve")


def _status(args: argparse.Namespace) -> int:
    from syncmesh_app.ops import commands

    return _run(commands.status(_options(args), args.cluster), "status")


def _audit(args: argparse.Namespace) -> int:
    from syncmesh_app.audit import AuditOptions, run_audit

    opts = AuditOptions(
        configs=args.config or [],
        config_dir=args.config_dir,
        all_clusters=args.all,
        nats_url=args.nats,
        timeout_s=args.timeout,
        json=args.json,
    )
    return _run(run_audit(opts), "audit")


def _add_nats_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats",
        metavar="URL",
        help="NATS server(s), comma-separated (else --config, else "
        "$SYNCMESH_NATS_URL, else nats://127.0.0.1:4222)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="an edge or registry TOML: its [nats] table (auth, TLS)"
    )
    parser.add_argument("--timeout", type=float, default=3.0, metavar="S", help="request timeout")
    parser.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")


def _level(text: str) -> str:
    try:
        logs.parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="syncmesh", description=__doc__)
    parser.add_argument(
        "--log-level",
        type=_level,
        default=os.environ.get("SYNCMESH_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (env SYNCMESH_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.LOG_FORMATS,
        default=os.environ.get("SYNCMESH_LOG_FORMAT", "text"),
        help="text, or json: one object per line (env SYNCMESH_LOG_FORMAT)",
    )
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

    inv = sub.add_parser("inventory", help="every cluster's services, from NATS")
    _add_nats_options(inv)
    inv.add_argument("--cluster", help="only this cluster")
    inv.add_argument("--namespace", help="only this namespace")
    inv.add_argument("--watch", action="store_true", help="then print every change (the stream)")
    inv.add_argument(
        "--via",
        choices=["auto", "registry", "stream"],
        default="auto",
        help="ask a registry replica, read the stream, or the first that answers (default)",
    )
    inv.set_defaults(func=_inventory)

    res = sub.add_parser("resolve", help="what DNS would answer for a name, and why")
    _add_nats_options(res)
    res.add_argument("name", help="payments, payments.shop.svc.syncmesh.internal, com.foo.Bar, ...")
    res.add_argument("--client", metavar="IP", help="the client address (default: none)")
    res.add_argument("--namespace", help="namespace of a bare service name (default: default)")
    res.add_argument("--cluster", help="pin to one cluster")
    res.add_argument("--version", help="only instances of this version (as DNS <v>.version.<svc>)")
    res.add_argument(
        "--tag",
        action="append",
        default=[],
        help="only instances carrying this tag (repeatable: every one of them)",
    )
    res.add_argument("--zone", default="syncmesh.internal", help="DNS zone, for display")
    res.set_defaults(func=_resolve)

    st = sub.add_parser("status", help="clusters and gateways as each registry replica sees them")
    _add_nats_options(st)
    st.add_argument("--cluster", help="only this cluster")
    st.set_defaults(func=_status)

    retire = sub.add_parser(
        "retire-cluster",
        help="tombstone every service of a decommissioned cluster and retire it (operator role)",
    )
    _add_nats_options(retire)
    retire.add_argument("name", help="the cluster to retire")
    retire.add_argument("--yes", action="store_true", help="do it (default: a dry run)")
    retire.add_argument(
        "--ttl", type=int, default=86400, help="seconds until the tombstones leave the stream"
    )
    retire.set_defaults(func=_retire_cluster)

    audit = sub.add_parser(
        "audit",
        help="a cluster's source read directly against the global inventory (exit 1: drift)",
    )
    audit.add_argument("--config", action="append", metavar="FILE", help="edge.toml (repeatable)")
    audit.add_argument("--config-dir", metavar="DIR", help="every edge config (*.toml) in DIR")
    audit.add_argument("--all", action="store_true", help="also list clusters with no config here")
    audit.add_argument("--nats", metavar="URL", help="NATS server(s) (default: the first config's)")
    audit.add_argument("--timeout", type=float, default=10.0, metavar="S")
    audit.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")
    audit.set_defaults(func=_audit)

    check = sub.add_parser("check-config", help="validate an edge or registry config file")
    check.add_argument("file")
    check.set_defaults(func=_check_config)

    schemas = sub.add_parser("schemas", help="write (or --check) schemas/*.json")
    schemas.add_argument("--check", action="store_true")
    schemas.set_defaults(func=_schemas)

    perms = sub.add_parser("nats-permissions", help="NATS permissions for an agent or a replica")
    perms.add_argument("kind", choices=["agent", "registry", "consumer"])
    perms.add_argument("name", help="the agent's cluster, the replica's name, or - for a consumer")
    perms.set_defaults(func=_nats_permissions)
    return parser


def _enable_faulthandler() -> None:
    """A crash in native code (the Nacos SDK's gRPC, uvloop) would otherwise leave
    an empty log; this writes every thread's Python stack to stderr first.
    ``python -m syncmesh_app`` enables it before importing anything; this covers
    the ``syncmesh`` console script. A stderr without a file descriptor (main()
    called in-process with captured output) has nothing to write to."""
    if faulthandler.is_enabled():
        return
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        faulthandler.enable()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    _enable_faulthandler()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"syncmesh: {exc}", file=sys.stderr)
        return 2
    except NoAnswer as exc:
        print(f"syncmesh: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
