"""``syncmesh inventory | resolve | status``: asyncio adapters over NATS.

Everything goes through NATS, so the commands run anywhere the NATS servers
are reachable; no registry is needed on the same host. ``inventory`` asks a
registry replica (``syncmesh.v2.api.inventory``) and falls back to reading the
stream itself (``watch_inventory``) when no replica answers or the answer is
too large, so it works with no registry at all; ``--watch`` always reads the
stream. ``resolve`` needs a replica somewhere (the answer depends on its
probes). ``status`` asks every replica (``syncmesh.v2.api.status`` has no queue
group) and collects the replies for a short while.

Each command returns its exit code: 0 ok, 1 not found / no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO, cast

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from global_registry.io.watch import (
    ClusterUpdated,
    InventorySnapshot,
    ServiceRemoved,
    ServiceUpdated,
    WatchEvent,
    watch_inventory,
)
from syncmesh import subjects
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import (
    Inventory,
    InventoryRequest,
    ResolveReply,
    ResolveRequest,
    StatusReply,
    StatusRequest,
    encode,
)
from syncmesh_app.ops import render
from syncmesh_app.ops.errors import NoAnswer
from syncmesh_io.nats_connection import connect

__all__ = ["NoAnswer", "Options", "cli_connection", "inventory", "resolve", "status"]

Via = Literal["auto", "registry", "stream"]

_inventory_decoder = msgspec.json.Decoder(Inventory)
_resolve_decoder = msgspec.json.Decoder(ResolveReply)
_status_decoder = msgspec.json.Decoder(StatusReply)


@dataclass
class Options:
    nats: NatsConfig
    # Bound of one request, and of connecting.
    timeout_s: float = 3.0
    json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def emit(self, text: str) -> None:
        print(text, file=self.out, flush=True)


@contextlib.asynccontextmanager
async def cli_connection(opts: Options) -> AsyncIterator[Any]:
    """One NATS connection that fails fast instead of retrying forever like the daemons."""
    errors: list[str] = []

    async def quiet(exc: Exception) -> None:
        # nats-py logs every failed attempt with a traceback; one line at the end is enough.
        errors.append(str(exc) or type(exc).__name__)

    try:
        # nats-py drops a server only after max_reconnect_attempts (> 0) failures; 0 means
        # "retry forever" on the initial connect. Two tries per server, then give up.
        async with asyncio.timeout(2 * opts.timeout_s + 1):
            nc = await connect(
                opts.nats,
                name=opts.nats.name or "syncmesh-cli",
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                connect_timeout=opts.timeout_s,
                error_cb=quiet,
            )
    except Exception as exc:  # noqa: BLE001 - nats-py raises several unrelated types here
        reason = errors[-1] if errors else str(exc) or type(exc).__name__
        raise NoAnswer(f"cannot connect to NATS {', '.join(opts.nats.servers)}: {reason}") from exc
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _request(nc: Any, subject: str, payload: bytes, wait_s: float) -> bytes | None:
    """The reply's bytes, or None when no replica listens or none answered in time."""
    try:
        msg = await nc.request(subject, payload, timeout=wait_s)
    except (NoRespondersError, NatsTimeout, TimeoutError):
        return None
    return bytes(msg.data)


# -- inventory ------------------------------------------------------------------


def _events(nc: Any, cluster: str | None, namespace: str | None) -> AsyncGenerator[WatchEvent]:
    # watch_inventory is an async generator; closing it unsubscribes from the stream.
    return cast(AsyncGenerator[WatchEvent], watch_inventory(nc, cluster, namespace))


async def _stream_snapshot(
    nc: Any, cluster: str | None, namespace: str | None, timeout_s: float
) -> Inventory:
    try:
        async with contextlib.aclosing(_events(nc, cluster, namespace)) as events:
            async with asyncio.timeout(timeout_s):
                async for event in events:
                    assert isinstance(event, InventorySnapshot)
                    return event.inventory
    except TimeoutError as exc:
        raise NoAnswer(f"the stream was not read within {timeout_s:.0f}s") from exc
    except Exception as exc:  # noqa: BLE001 - no stream yet, no JetStream, no permission
        raise NoAnswer(f"cannot read stream {subjects.STREAM}: {exc}") from exc
    raise NoAnswer("the stream reader ended without a snapshot")


async def fetch_inventory(
    nc: Any, opts: Options, cluster: str | None, namespace: str | None, via: Via
) -> tuple[Inventory, str]:
    """The inventory and where it came from (``registry`` or ``stream``)."""
    note = ""
    if via in ("auto", "registry"):
        data = await _request(
            nc,
            subjects.INVENTORY,
            encode(InventoryRequest(cluster=cluster, namespace=namespace)),
            opts.timeout_s,
        )
        if data is None:
            note = f"no registry replica answered on {subjects.INVENTORY}"
        else:
            inv = _inventory_decoder.decode(data)
            if not inv.error:
                return inv, "registry"
            note = f"registry: {inv.error}"
        if via == "registry":
            raise NoAnswer(note)
    # A whole stream can take a while to read; it is bounded far above one request.
    inv = await _stream_snapshot(nc, cluster, namespace, max(60.0, opts.timeout_s))
    return inv, f"stream ({note})" if note else "stream"


async def inventory(
    opts: Options,
    cluster: str | None = None,
    namespace: str | None = None,
    watch: bool = False,
    via: Via = "auto",
) -> int:
    async with cli_connection(opts) as nc:
        if watch:
            await _watch(nc, opts, cluster, namespace)
            return 0
        inv, origin = await fetch_inventory(nc, opts, cluster, namespace, via)
    if opts.json:
        opts.emit(render.to_json(inv))
    else:
        opts.emit(render.inventory_text(inv))
        print(f"\n(from the {origin})", file=sys.stderr)
    if cluster is not None and not inv.clusters:
        print(f"syncmesh: no cluster {cluster!r}", file=sys.stderr)
        return 1
    return 0


def _event_json(event: WatchEvent) -> str:
    if isinstance(event, InventorySnapshot):
        return render.to_json({"event": "snapshot", "inventory": event.inventory})
    if isinstance(event, ServiceUpdated):
        return render.to_json({"event": "service-updated", "service": event.service})
    if isinstance(event, ServiceRemoved):
        return render.to_json(
            {
                "event": "service-removed",
                "cluster": event.cluster,
                "namespace": event.namespace,
                "service": event.service,
            }
        )
    return render.to_json({"event": "cluster-updated", "cluster": event.cluster})


def _event_text(event: WatchEvent) -> str:
    stamp = time.strftime("%H:%M:%S")
    if isinstance(event, InventorySnapshot):
        return render.inventory_text(event.inventory) + "\n\nwatching for changes (Ctrl-C stops)"
    if isinstance(event, ServiceUpdated):
        return f"{stamp} {render.service_line(event.service)}"
    if isinstance(event, ServiceRemoved):
        return f"{stamp} removed {event.cluster}/{event.namespace}/{event.service}"
    assert isinstance(event, ClusterUpdated)
    return f"{stamp} {render.cluster_line(event.cluster)}"


async def _watch(nc: Any, opts: Options, cluster: str | None, namespace: str | None) -> None:
    """Until cancelled (Ctrl-C, SIGTERM): the snapshot, then one line per change."""
    try:
        async with contextlib.aclosing(_events(nc, cluster, namespace)) as events:
            seen: dict[str, tuple[object, ...]] = {}
            async for event in events:
                if isinstance(event, InventorySnapshot):
                    seen = {c.cluster: render.cluster_digest(c) for c in event.inventory.clusters}
                elif isinstance(event, ClusterUpdated):
                    # Every beat is an update; print only what changed for an operator.
                    digest = render.cluster_digest(event.cluster)
                    if seen.get(event.cluster.cluster) == digest:
                        continue
                    seen[event.cluster.cluster] = digest
                opts.emit(_event_json(event) if opts.json else _event_text(event))
    except Exception as exc:  # noqa: BLE001 - no stream yet, no JetStream, no permission
        raise NoAnswer(f"cannot read stream {subjects.STREAM}: {exc}") from exc


# -- resolve --------------------------------------------------------------------


async def resolve(
    opts: Options,
    name: str,
    namespace: str | None = None,
    client: str | None = None,
    cluster: str | None = None,
    zone: str = "syncmesh.internal",
    version: str | None = None,
    tags: Sequence[str] = (),
) -> int:
    """0: DNS would answer with an address; 1: unknown name, no candidate or no replica;
    2: the request was bad (say, the client is not an IP address).

    ``version`` / ``tags``: only instances of that version carrying every tag count,
    as for the DNS subset names (which ``name`` may also be)."""
    name_version, name_tag, name = render.parse_subset(name)
    version = version or name_version
    tags = [*tags, *([name_tag] if name_tag else [])]
    service, ns, pinned = render.parse_name(name, namespace)
    request = ResolveRequest(
        namespace=ns,
        service=service,
        client=client,
        cluster=cluster or pinned,
        version=version,
        tags=list(tags),
    )
    async with cli_connection(opts) as nc:
        data = await _request(nc, subjects.RESOLVE, encode(request), opts.timeout_s)
    if data is None:
        raise NoAnswer(f"no registry replica answered on {subjects.RESOLVE}")
    reply = _resolve_decoder.decode(data)
    if reply.error:
        print(f"syncmesh: {reply.error}", file=sys.stderr)
        return 2
    subset = " ".join([*([f"version {version}"] if version else []), *(f"tag {t}" for t in tags)])
    opts.emit(
        render.to_json(reply) if opts.json else render.resolve_text(reply, client, zone, subset)
    )
    return 0 if reply.known and reply.clusters else 1


# -- status ---------------------------------------------------------------------


async def _gather(
    nc: Any, subject: str, payload: bytes, first_s: float, settle_s: float
) -> list[bytes]:
    """Every reply to one request: wait up to ``first_s`` for the first, then ``settle_s``
    after the last (replicas answer at about the same time)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[bytes] = []
    try:
        await nc.publish(subject, payload, reply=inbox)
        wait = first_s
        while True:
            try:
                msg = await sub.next_msg(timeout=wait)
            except (NatsTimeout, TimeoutError):
                break
            headers = msg.headers or {}
            if headers.get("Status") == "503":  # no responders
                break
            replies.append(bytes(msg.data))
            wait = settle_s
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return replies


async def status(opts: Options, cluster: str | None = None, settle_s: float = 0.3) -> int:
    async with cli_connection(opts) as nc:
        raw = await _gather(
            nc, subjects.STATUS, encode(StatusRequest(cluster=cluster)), opts.timeout_s, settle_s
        )
        replies = sorted((_status_decoder.decode(r) for r in raw), key=lambda r: r.replica)
        if replies:
            if opts.json:
                opts.emit(render.to_json(replies))
            else:
                opts.emit("\n\n".join(render.status_text(r) for r in replies))
            if cluster is not None and not any(r.clusters for r in replies):
                print(f"syncmesh: no cluster {cluster!r}", file=sys.stderr)
                return 1
            return 0
        # No replica: what the stream alone tells (beats), without probe states.
        inv = await _stream_snapshot(nc, cluster, None, max(60.0, opts.timeout_s))
    note = f"no registry replica answered on {subjects.STATUS} within {opts.timeout_s:g}s"
    if opts.json:
        opts.emit(render.to_json({"error": note, "clusters": inv.clusters}))
    else:
        opts.emit(f"{note}; clusters as the stream shows them (no probe states):\n")
        opts.emit(render.stream_clusters_text(inv.clusters, time.time()))
    return 1
