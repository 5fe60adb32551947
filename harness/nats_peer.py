"""Real nats-servers for tests: the product's embedded launcher, plus test TLS certificates."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from harness.certs import make_certs
from syncmesh_app.embedded.nats import NatsNode, NatsPeer, nats_version
from syncmesh_app.embedded.nats import nats_server as embedded_nats_server

__all__ = ["NatsNode", "NatsPeer", "nats_server", "nats_version"]


@contextlib.asynccontextmanager
async def nats_server(
    cluster_size: int = 1,
    jetstream: bool = True,
    users: dict[str, str] | None = None,
    workdir: Path | None = None,
    tls: bool = False,
    token: str | None = None,
    permissions: dict[str, dict[str, object]] | None = None,
    extra_config: str = "",
    verify_clients: bool = False,
) -> AsyncIterator[NatsPeer]:
    """``tls=True`` makes a throwaway CA and server certificate for 127.0.0.1;
    ``verify_clients`` makes the server require client certificates (mutual TLS)."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="syncmesh-nats-"))
            )
        certs = make_certs(workdir / "tls") if tls else None
        async with embedded_nats_server(
            cluster_size=cluster_size,
            jetstream=jetstream,
            users=users,
            workdir=workdir,
            tls=certs,
            token=token,
            permissions=permissions,
            extra_config=extra_config,
            verify_clients=verify_clients,
        ) as peer:
            yield peer
