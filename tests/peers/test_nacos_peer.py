"""The Nacos used by the tests is a real standalone server (assembled from Maven
Central by harness.nacos_build), driven through nacos-sdk-python's v2
async API exactly as the Nacos edge will drive it: pushes arrive over gRPC, the
empty push after the last deregistration is delivered, and auth is enforced."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from v2.nacos import (
    ClientConfigBuilder,
    DeregisterInstanceParam,
    Instance,
    ListInstanceParam,
    ListServiceParam,
    NacosException,
    NacosNamingService,
    RegisterInstanceParam,
    SubscribeServiceParam,
)

from harness.nacos_build import NACOS_VERSION
from harness.nacos_peer import NacosPeer, nacos_server

pytestmark = pytest.mark.peers

PUSH_TIMEOUT = 15.0  # pushes normally arrive within a second


async def _client(
    peer: NacosPeer, tmp: Path, username: str | None = None, password: str | None = None
) -> NacosNamingService:
    builder = (
        ClientConfigBuilder()
        .server_address(peer.server_addr)
        # The SDK defaults both to ~; a stale disk cache would also replay old
        # instances at start, so read none and keep files in the test's tmp dir.
        .cache_dir(str(tmp / "cache"))
        .log_dir(str(tmp / "logs"))
        .load_cache_at_start(False)
        .log_level(logging.WARNING)
    )
    if username is not None:
        builder = builder.username(username).password(password or "")
    config = builder.build()
    # 3.2.0's builder has no method for this; without it the SDK silently drops
    # the push that empties a service (the deregistration of the last instance).
    config.set_update_cache_when_empty(True)
    return await NacosNamingService.create_naming_service(config)


async def _close(client: NacosNamingService) -> None:
    await client.shutdown()
    # Each client adds a file handler to the shared "naming" logger and never
    # removes it; close them so tests do not leak open files.
    logger = logging.getLogger("naming")
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


async def _next_push(
    pushes: asyncio.Queue[list[Instance]],
    want: Callable[[list[Instance]], bool],
) -> list[Instance]:
    async with asyncio.timeout(PUSH_TIMEOUT):
        while True:
            hosts = await pushes.get()
            if want(hosts):
                return hosts


async def test_register_push_and_empty_push(tmp_path: Path) -> None:
    async with nacos_server(workdir=tmp_path / "nacos") as peer:
        print(f"\nNacos server version: {peer.version} ({peer.startup_seconds:.1f}s to ready)")
        assert peer.version == NACOS_VERSION
        assert peer.grpc_port == peer.port + 1000
        # Logs go to the work dir, not to ~/nacos/logs.
        assert (peer.workdir / "home" / "logs" / "nacos.log").is_file()

        subscriber = await _client(peer, tmp_path / "sub")
        registrar = await _client(peer, tmp_path / "reg")
        try:
            pushes: asyncio.Queue[list[Instance]] = asyncio.Queue()

            async def on_change(instances: list[Instance]) -> None:
                await pushes.put(list(instances))

            service = "syncmesh-push-test"
            await subscriber.subscribe(
                SubscribeServiceParam(service_name=service, subscribe_callback=on_change)
            )
            await registrar.register_instance(
                RegisterInstanceParam(
                    service_name=service, ip="127.0.0.1", port=18080, metadata={"zone": "z1"}
                )
            )
            hosts = await _next_push(pushes, lambda h: len(h) == 1)
            assert (hosts[0].ip, hosts[0].port, hosts[0].metadata.get("zone")) == (
                "127.0.0.1",
                18080,
                "z1",
            )

            # The naming namespace is "public", but ListServiceParam defaults
            # namespace_id to "", so name it explicitly.
            listed = await subscriber.list_services(ListServiceParam(namespace_id="public"))
            assert service in listed.services

            await registrar.deregister_instance(
                DeregisterInstanceParam(service_name=service, ip="127.0.0.1", port=18080)
            )
            assert await _next_push(pushes, lambda h: h == []) == []
        finally:
            await _close(subscriber)
            await _close(registrar)


async def test_auth_accepts_right_password_and_refuses_wrong(tmp_path: Path) -> None:
    async with nacos_server(auth=True, workdir=tmp_path / "nacos") as peer:
        print(f"\nNacos server version: {peer.version} (auth on, user {peer.username})")
        assert (peer.username, peer.password) == ("nacos", "nacos")

        good = await _client(peer, tmp_path / "good", peer.username, peer.password)
        wrong = await _client(peer, tmp_path / "wrong", peer.username, "not-the-password")
        anonymous = await _client(peer, tmp_path / "anon")
        try:
            service = "syncmesh-auth-test"
            assert await good.register_instance(
                RegisterInstanceParam(service_name=service, ip="127.0.0.1", port=18081)
            )
            hosts = await good.list_instances(
                ListInstanceParam(service_name=service, subscribe=False, healthy_only=None)
            )
            assert [(h.ip, h.port) for h in hosts] == [("127.0.0.1", 18081)]

            for client in (wrong, anonymous):
                with pytest.raises(NacosException):
                    await client.register_instance(
                        RegisterInstanceParam(service_name=service, ip="127.0.0.1", port=18082)
                    )
        finally:
            for client in (good, wrong, anonymous):
                await _close(client)


async def test_restart_keeps_ports_and_serves_again(tmp_path: Path) -> None:
    async with nacos_server(workdir=tmp_path / "nacos") as peer:
        port, first_pid = peer.port, peer.process.pid
        await peer.restart()
        assert peer.port == port and peer.process.pid != first_pid and peer.process.alive()
        client = await _client(peer, tmp_path / "client")
        try:
            service = "syncmesh-restart-test"
            assert await client.register_instance(
                RegisterInstanceParam(service_name=service, ip="127.0.0.1", port=18083)
            )
            hosts = await client.list_instances(
                ListInstanceParam(service_name=service, subscribe=False, healthy_only=None)
            )
            assert [h.port for h in hosts] == [18083]
        finally:
            await _close(client)
    # The context manager tore the whole process group down.
    assert not peer.process.alive()
