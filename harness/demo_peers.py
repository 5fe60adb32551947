"""``./run demo --consul`` / ``--nacos``: one demo cluster on a real registry.

The peers come from ``./run peers`` (Consul built from the Go module proxy, Nacos
assembled from Maven Central); the demo registers the same services the file
source would have, so the commands printed by the demo work unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from edge_sync.config import ConsulSourceConfig, NacosSourceConfig, SourceConfig
from harness.consul_peer import consul_agent
from harness.nacos_peer import nacos_server

__all__ = ["consul_source", "nacos_source"]


@contextlib.asynccontextmanager
async def consul_source(workdir: Path, listener: tuple[str, int]) -> AsyncIterator[SourceConfig]:
    async with consul_agent(workdir=workdir / "consul") as consul, aiohttp.ClientSession() as http:
        for i, address in enumerate(["10.1.0.11", "10.1.0.12"], start=1):
            body = {"ID": f"payments-{i}", "Name": "payments", "Address": address, "Port": 8080}
            async with http.put(
                f"{consul.http_url}/v1/agent/service/register", json=body, headers=consul.headers()
            ) as resp:
                resp.raise_for_status()
        print(
            f"demo: Consul v1.14 at {consul.http_url} (try: curl {consul.http_url}/v1/catalog/services)"
        )
        yield SourceConfig(
            kind="consul",
            consul=ConsulSourceConfig(address=consul.http_addr, token=consul.token or ""),
        )


@contextlib.asynccontextmanager
async def nacos_source(workdir: Path, listener: tuple[str, int]) -> AsyncIterator[SourceConfig]:
    """Nacos TCP-checks persistent instances, so they point at ``listener``, a real
    loopback listener (the west gateway): never at an address outside 127.0.0.0/8."""
    address, port = listener
    async with nacos_server(workdir=workdir / "nacos") as nacos, aiohttp.ClientSession() as http:
        for name in ("payments", "com.example.Inventory"):
            params = {"serviceName": name, "ip": address, "port": str(port), "ephemeral": "false"}
            async with http.post(
                f"http://{nacos.server_addr}/nacos/v1/ns/instance", params=params
            ) as resp:
                resp.raise_for_status()
        print(f"demo: Nacos {nacos.version} at {nacos.server_addr}")
        yield SourceConfig(
            kind="nacos",
            nacos=NacosSourceConfig(
                server_addr=nacos.server_addr,
                username=nacos.username or "",
                password=nacos.password or "",
                work_dir=str(workdir / "nacos-sdk"),
            ),
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.demo_peers [--consul] [--nacos] [demo options]``."""
    import argparse
    import asyncio

    from syncmesh_app.demo import DemoOptions, SourceFactory, run_demo

    parser = argparse.ArgumentParser(prog="./run demo")
    parser.add_argument("--consul", action="store_true", help="cluster east follows a real Consul")
    parser.add_argument("--nacos", action="store_true", help="cluster west follows a real Nacos")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--dns-port", type=int, default=1053)
    parser.add_argument("--admin-port", type=int, default=8080)
    args = parser.parse_args(argv)
    sources: dict[str, SourceFactory] = {}
    if args.consul:
        sources["east"] = consul_source
    if args.nacos:
        sources["west"] = nacos_source
    options = DemoOptions(
        workdir=args.workdir, dns_port=args.dns_port, admin_port=args.admin_port, sources=sources
    )
    try:
        asyncio.run(run_demo(options))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    import logging
    import sys

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
