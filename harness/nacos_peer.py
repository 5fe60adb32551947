"""A real standalone Nacos server (embedded Derby) on 127.0.0.1 for tests.

The server comes from :func:`harness.nacos_build.ensure_nacos`. Nacos
derives its other ports from the HTTP port P: the SDK gRPC port is P+1000, the
cluster gRPC port P+1001 and, even in standalone mode, JRaft listens on
P-1000, so all four must be free. Everything the server writes (Derby, JRaft
data, logs, Tomcat's work dir) goes under the work dir, never to ``~``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from harness.nacos_build import ensure_nacos
from syncmesh_app.embedded.process import (
    ManagedProcess,
    PeerStartError,
    free_port,
    reserve_ports,
    wait_tcp,
)

__all__ = ["NacosPeer", "nacos_server"]

HOST = "127.0.0.1"
DEFAULT_USER = "nacos"
DEFAULT_PASSWORD = "nacos"
START_TIMEOUT = 180.0  # a cold JVM on a busy 2-core CI machine can take a while


@dataclass
class NacosPeer:
    host: str
    port: int
    grpc_port: int
    username: str | None
    password: str | None
    version: str
    process: ManagedProcess
    workdir: Path
    auth: bool
    startup_seconds: float = 0.0

    @property
    def server_addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/nacos"

    async def stop(self) -> None:
        # Nacos runs shutdown hooks on SIGTERM; give them time before SIGKILL.
        await self.process.stop(grace=15.0)

    async def restart(self) -> None:
        """Stop and start again on the same ports and data (Derby survives)."""
        await self.stop()
        await _start_and_wait(self)

    async def login(self, session: aiohttp.ClientSession, password: str | None = None) -> str:
        """An access token for ``username`` (raises on a refused login)."""
        async with session.post(
            f"{self.base_url}/v1/auth/users/login",
            data={"username": self.username or "", "password": password or self.password or ""},
        ) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise PermissionError(f"login refused: HTTP {resp.status} {body[:200]}")
            return str((await resp.json(content_type=None))["accessToken"])


def _port_is_free(port: int) -> bool:
    # Nacos's gRPC and JRaft servers bind the wildcard address, so test that,
    # with SO_REUSEADDR like the JVM servers (TIME_WAIT must not count as busy).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


_PORT_ATTEMPTS = 3


def _port_collision(root: Path) -> bool:
    """Nacos logged a bind failure (its own log files and the JVM's output)."""
    for log in [root / "nacos.out.log", *root.glob("home/logs/*.log")]:
        try:
            if "already in use" in log.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


def _pick_http_port() -> int:
    for _ in range(100):
        port = free_port()
        derived = (port - 1000, port + 1000, port + 1001)
        if port - 1000 < 1024 or port + 1001 > 65535:
            continue
        # free_port() reserved `port` itself; the derived ports must be reserved
        # too, or a peer started next could be handed one of them.
        if (
            _port_is_free(port)
            and all(_port_is_free(p) for p in derived)
            and reserve_ports(derived)
        ):
            return port
    raise PeerStartError("no HTTP port P with P-1000, P+1000 and P+1001 also free")


def _jvm_args(port: int, home: Path, auth: bool) -> list[str]:
    props: dict[str, str] = {
        "nacos.standalone": "true",
        "nacos.home": str(home),
        # Logback's and the embedded client's defaults point into ~.
        "user.home": str(home),
        "nacos.logs.path": str(home / "logs"),
        "JM.LOG.PATH": str(home / "logs"),
        "JM.SNAPSHOT.PATH": str(home),
        "derby.stream.error.file": str(home / "derby.log"),
        "server.tomcat.basedir": str(home / "tomcat"),
        "server.tomcat.accesslog.enabled": "false",
        "server.port": str(port),
        "server.address": HOST,
        "nacos.inetutils.ip-address": HOST,
        "nacos.inetutils.prefer-hostname-over-ip": "false",
        "java.net.preferIPv4Stack": "true",
        "nacos.istio.mcp.server.enabled": "false",
        "nacos.core.auth.enabled": "true" if auth else "false",
    }
    if auth:
        props.update(
            {
                "nacos.core.auth.system.type": "nacos",
                "nacos.core.auth.enable.userAgentAuthWhite": "false",
                # With caching on, users are loaded into memory 5 s after start
                # and every 15 s after that: logins fail until then, and users
                # created through the API are unknown for up to 15 s.
                "nacos.core.auth.caching.enabled": "false",
                # JWT signing key: must be base64 of at least 32 bytes.
                "nacos.core.auth.plugin.nacos.token.secret.key": base64.b64encode(
                    secrets.token_bytes(32)
                ).decode(),
                "nacos.core.auth.server.identity.key": "syncmesh-test",
                "nacos.core.auth.server.identity.value": secrets.token_hex(16),
            }
        )
    jvm = [
        "-Xms256m", "-Xmx512m", "-Xss512k", "-XX:+UseSerialGC",
        # C1 only: roughly halves JVM startup CPU on a 2-core machine.
        "-XX:TieredStopAtLevel=1",
        "-Djava.security.egd=file:/dev/./urandom",
    ]  # fmt: skip
    return jvm + [f"-D{k}={v}" for k, v in props.items()]


async def _get(session: aiohttp.ClientSession, url: str, **params: str) -> str:
    async with session.get(url, params=params) as resp:
        body = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {resp.status} {body[:200]}")
        return body


async def _get_json(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    return json.loads(await _get(session, url, **params))


async def _ensure_admin(peer: NacosPeer, session: aiohttp.ClientSession) -> str:
    """Log in as the admin; on servers without a default admin password
    (Nacos >= 2.4 and 3.x) initialise it first."""
    try:
        return await peer.login(session)
    except PermissionError:
        async with session.post(
            f"{peer.base_url}/v1/auth/users/admin", data={"password": peer.password or ""}
        ) as resp:
            await resp.read()
        return await peer.login(session)


async def _ready_once(peer: NacosPeer, session: aiohttp.ClientSession) -> str:
    """One readiness probe; returns the server's version or raises."""
    await _get(session, f"{peer.base_url}/v1/console/health/readiness")  # plain "OK"
    token = {"accessToken": await _ensure_admin(peer, session)} if peer.auth else {}
    metrics = await _get_json(session, f"{peer.base_url}/v1/ns/operator/metrics", **token)
    if metrics.get("status") != "UP":
        raise RuntimeError(f"naming not up: {metrics}")
    await wait_tcp(peer.host, peer.grpc_port, timeout=1.0)
    state = await _get_json(session, f"{peer.base_url}/v1/console/server/state")
    return str(state.get("version") or "?")


async def _start_and_wait(peer: NacosPeer) -> None:
    started = time.monotonic()
    peer.process.start()
    last: Exception | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() - started < START_TIMEOUT:
            if not peer.process.alive():
                code = peer.process.proc.returncode if peer.process.proc else None
                raise peer.process.fail(f"exited with code {code} before becoming ready")
            try:
                peer.version = await _ready_once(peer, session)
                peer.startup_seconds = time.monotonic() - started
                return
            except (aiohttp.ClientError, OSError, RuntimeError, TimeoutError, ValueError) as exc:
                last = exc
            await asyncio.sleep(0.25)
    peer.process.kill()
    raise peer.process.fail(f"not ready after {START_TIMEOUT:.0f}s (last probe error: {last!r})")


@contextlib.asynccontextmanager
async def nacos_server(auth: bool = False, workdir: Path | None = None) -> AsyncIterator[NacosPeer]:
    """Start a standalone Nacos; yields once HTTP naming and gRPC both answer."""
    install = await asyncio.to_thread(ensure_nacos)
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="syncmesh-nacos-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    home.mkdir(exist_ok=True)
    # Nacos cannot bind port 0 and report it (it derives three more ports from
    # its HTTP port), so the ports are picked here and bound moments later; a
    # collision in between shows in its log and is retried on fresh ports.
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        port = _pick_http_port()
        log_path = root / "nacos.out.log"
        log_path.unlink(missing_ok=True)  # a retry reads only its own start
        process = ManagedProcess(
            name=f"nacos-{install.version}",
            argv=install.argv(_jvm_args(port, home, auth)),
            log_path=log_path,
            cwd=root,
        )
        peer = NacosPeer(
            host=HOST,
            port=port,
            grpc_port=port + 1000,
            username=DEFAULT_USER if auth else None,
            password=DEFAULT_PASSWORD if auth else None,
            version=install.version,
            process=process,
            workdir=root,
            auth=auth,
        )
        try:
            await _start_and_wait(peer)
            break
        except PeerStartError:
            await peer.stop()
            if attempt == _PORT_ATTEMPTS or not _port_collision(root):
                if owned:
                    shutil.rmtree(root, ignore_errors=True)
                raise
    try:
        print(
            f"Nacos {peer.version} ready on {peer.server_addr} (gRPC {peer.grpc_port}, "
            f"auth={auth}) in {peer.startup_seconds:.1f}s",
            flush=True,
        )
        yield peer
    finally:
        await peer.stop()
        if owned:
            shutil.rmtree(root, ignore_errors=True)
