"""``syncmesh audit``: a cluster's source, read directly, against the global inventory.

For each edge config given (``--config``, repeatable, or every edge TOML in
``--config-dir``) the command lists the cluster's source once, exactly as the
agent maps it (its Consul/Nacos/file adapter's one-shot listing, then the
agent's filters, labels and instance mapping in an ``EdgeCore``), reads the
last message of every service subject of that cluster from the stream, and
prints per service what is missing globally, extra, or different, with the age
of the global copy (on the NATS server's clock). ``--all`` also lists every
cluster NATS knows of that no config was given for, as not audited: a beat
does not carry its source's address or credentials, so only the operator's
configs say which sources are reachable from here.

Exit status: 0 every audited cluster in sync, 1 drift, 2 an error (bad config,
unreachable source or NATS). Pure comparison and rendering:
``syncmesh_app.ops.audit_report``.
"""

from __future__ import annotations

import asyncio
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from edge_sync.config import EdgeConfig
from edge_sync.core.agent import EdgeCore
from edge_sync.core.model import ServiceRef, SourceService
from edge_sync.io.remote_state import read_stored_states
from edge_sync.io.standby import server_now
from syncmesh import subjects
from syncmesh.configfile import ConfigError, load_config
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import decode_cluster_beat
from syncmesh_app.ops.audit_report import (
    AuditReport,
    ClusterAudit,
    Desired,
    Global,
    audit_text,
    compare,
    summarize,
)
from syncmesh_app.ops.commands import Options, cli_connection
from syncmesh_app.ops.errors import NoAnswer
from syncmesh_app.ops.render import to_json
from syncmesh_app.ops.target import config_kind, nats_settings

__all__ = ["AuditOptions", "run_audit", "list_source", "EXIT_IN_SYNC", "EXIT_DRIFT", "EXIT_ERROR"]

EXIT_IN_SYNC, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2
# A registry calls an agent stale after this many silent beat intervals (its default).
STALE_AFTER_BEATS = 3.0

Key = tuple[str, str]


class AuditError(Exception):
    """The source could not be listed completely."""


@dataclass
class AuditOptions:
    configs: list[str] = field(default_factory=list)
    config_dir: str | None = None
    all_clusters: bool = False
    nats_url: str | None = None
    timeout_s: float = 10.0
    json: bool = False


class _Collector:
    """The sink a one-shot listing reports to: the agent's core, plus errors and notes."""

    def __init__(self, core: EdgeCore) -> None:
        self.core = core
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.done = False

    def apply(
        self, changed: Iterable[SourceService] = (), removed: Iterable[ServiceRef] = ()
    ) -> None:
        for collision in self.core.apply(changed, removed):
            self.notes.append(f"label collision: {collision}")

    def replace_all(self, services: Iterable[SourceService]) -> None:
        for collision in self.core.replace_all(services):
            self.notes.append(f"label collision: {collision}")

    def synced(self) -> None:
        self.done = True

    def failed(self, reason: str, detail: str) -> None:
        self.errors.append(f"{reason}: {detail}")

    def recovered(self) -> None:
        return None

    def invalid(self, reason: str, detail: str) -> None:
        self.notes.append(f"not published by the agent ({reason}): {detail}")

    def request(self, kind: str) -> None:
        return None

    def event(self, kind: str) -> None:
        return None


def source_description(config: EdgeConfig) -> str:
    src = config.source
    if src.kind == "consul":
        return f"consul {src.consul.address}"
    if src.kind == "nacos":
        return f"nacos {src.nacos.server_addr}"
    return f"file {src.file.path}"


async def list_source(config: EdgeConfig, timeout_s: float) -> tuple[dict[Key, Desired], list[str]]:
    """What the agent would publish for ``config``'s source right now, and notes on it."""
    core = EdgeCore(config, now=0.0)
    sink = _Collector(core)
    kind = config.source.kind
    try:
        async with asyncio.timeout(timeout_s):
            if kind == "file":
                from edge_sync.io.service_file import FileSource

                FileSource(config.source.file, sink).poll_once(0.0)
                if not sink.done and not sink.errors:
                    sink.errors.append(f"cannot read {config.source.file.path}")
            elif kind == "consul":
                from edge_sync.io.consul import ConsulSource

                await ConsulSource(
                    config.source.consul, sink, core.filter.may_accept_name
                ).list_once()
            else:
                from edge_sync.io.nacos import NacosSource

                await NacosSource(
                    config.source.nacos, sink, core.filter.may_accept_name
                ).list_all_once()
    except TimeoutError:
        raise AuditError(f"no complete listing within {timeout_s}s") from None
    except AuditError:
        raise
    except Exception as exc:  # aiohttp, the Nacos SDK, the file: anything is "unreachable"
        raise AuditError(f"{type(exc).__name__}: {exc}") from exc
    if sink.errors or not sink.done:
        raise AuditError("; ".join(sink.errors) or "the listing did not complete")
    desired = {
        key: (source_name, instances)
        for key, source_name, instances, deleted in core.state.desired_items()
        if not deleted
    }
    return desired, sink.notes


async def _last_beat(js: Any, cluster: str) -> Any:
    import nats.js.errors

    try:
        return await js.get_last_msg(
            subjects.STREAM, subjects.cluster_subject(cluster), direct=True
        )
    except nats.js.errors.NotFoundError:
        return None


async def audit_cluster(config: EdgeConfig, nc: Any, timeout_s: float) -> ClusterAudit:
    result = ClusterAudit(cluster=config.cluster, source=source_description(config))
    try:
        desired, notes = await list_source(config, timeout_s)
    except AuditError as exc:
        result.error = f"source {result.source}: {exc}"
        return result
    result.notes = notes
    js = nc.jetstream(timeout=timeout_s)
    now = await server_now(nc, timeout_s)
    stored = await read_stored_states(js, config.cluster)
    global_ = {
        key: Global(s.state, max(0.0, now - s.stored_at) if s.stored_at else None)
        for key, s in stored.items()
        if s.state is not None
    }
    raw = await _last_beat(js, config.cluster)
    if raw is not None and raw.time is not None:
        try:
            beat = decode_cluster_beat(raw.data or b"")
        except (msgspec.ValidationError, msgspec.DecodeError):
            beat = None
        if beat is not None:
            result.beat_age_s = round(max(0.0, now - raw.time.timestamp()), 3)
            result.agent_stale = result.beat_age_s > STALE_AFTER_BEATS * beat.interval_s
            result.leader, result.standbys = beat.leader, beat.standbys
    result.source_services = len(desired)
    result.global_services = sum(1 for g in global_.values() if not g.state.deleted)
    result.drift = compare(desired, global_)
    return result


def _configs(opts: AuditOptions) -> list[str]:
    paths = list(opts.configs)
    if opts.config_dir:
        for path in sorted(Path(opts.config_dir).glob("*.toml")):
            try:
                data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError):
                continue  # not ours to judge: only edge configs are picked up
            if config_kind(data) == "edge":
                paths.append(str(path))
    return paths


async def _stream_clusters(nc: Any, timeout_s: float) -> set[str]:
    js = nc.jetstream(timeout=timeout_s)
    names: set[str] = set()
    for wildcard in (subjects.CLUSTER_WILDCARD, subjects.EPOCH_WILDCARD):
        info = await js.stream_info(subjects.STREAM, subjects_filter=wildcard)
        for subject in info.state.subjects or {}:
            parsed = subjects.parse_subject(subject)
            if parsed is not None:
                names.add(parsed.cluster)
    return names


async def audit(opts: AuditOptions) -> AuditReport:
    """Raises ``ConfigError`` (bad or no config) and ``NoAnswer`` (NATS unreachable)."""
    paths = _configs(opts)
    if not paths:
        raise ConfigError("audit: give --config FILE (repeatable) or --config-dir DIR")
    configs = [load_config(p, EdgeConfig, "SYNCMESH_EDGE") for p in paths]
    settings: NatsConfig = nats_settings(opts.nats_url, paths[0])
    results: list[ClusterAudit] = []
    async with cli_connection(Options(nats=settings, timeout_s=opts.timeout_s)) as nc:
        for config in configs:
            results.append(await audit_cluster(config, nc, opts.timeout_s))
        if opts.all_clusters:
            audited = {c.cluster for c in configs}
            for name in sorted(await _stream_clusters(nc, opts.timeout_s) - audited):
                results.append(ClusterAudit(cluster=name, audited=False))
    return summarize(results)


async def run_audit(opts: AuditOptions) -> int:
    try:
        report = await audit(opts)
    except NoAnswer as exc:
        print(f"syncmesh audit: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(to_json(report) if opts.json else audit_text(report), flush=True)
    if any(c.error for c in report.clusters):
        return EXIT_ERROR
    return EXIT_IN_SYNC if report.in_sync else EXIT_DRIFT
