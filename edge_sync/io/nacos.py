"""Nacos, asyncio adapter on nacos-sdk-python's v2 API: gRPC push subscriptions plus a paged list.

One naming client per configured namespace. Every service found by the
periodic list is subscribed (pushes arrive through the callback); services that
leave the list are unsubscribed and removed. A round reads instances only for
new services (and those whose last read failed) plus a bounded safety-net slice
(``FollowPlan``: each service at least once per ``reread_interval_s``), so the
idle cost does not grow with every service every second. SDK traps handled here: empty
pushes are kept (``update_cache_when_empty``), the namespace of a listing is
always passed explicitly, and the SDK's disk cache is never loaded at start
(its cache and log folders live in ``work_dir`` or a private temporary folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge_sync.config import NacosSourceConfig
from edge_sync.core.model import SourceService
from edge_sync.core.nacos import (
    FollowPlan,
    NacosCatalog,
    NacosKey,
    map_instances,
    nacos_namespace_id,
    service_names,
    service_ref,
    syncmesh_namespace,
)
from edge_sync.core.source_api import SourceSink
from syncmesh_io.retry import forever
from syncmesh_io.secrets import SecretFile

__all__ = ["NacosSource"]

log = logging.getLogger("edge_sync.nacos")

SUBSCRIBE_CONCURRENCY = 16


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "nacos_timeout"
    text = str(exc).lower()
    if (
        "auth" in text
        or "token" in text
        or "403" in text
        or "permission" in text
        or "password" in text
    ):
        return "nacos_auth"
    return "nacos_request"


class NacosSource:
    def __init__(
        self, config: NacosSourceConfig, sink: SourceSink, may_accept: Callable[[str], bool]
    ) -> None:
        self.config = config
        self.sink = sink
        self.may_accept = may_accept
        self.catalog = NacosCatalog()
        self.plan: FollowPlan | None = None  # made at the first round (needs loop time)
        self._clients: dict[str, Any] = {}
        self._callbacks: dict[NacosKey, Callable[[list[Any]], Awaitable[None]]] = {}
        self._synced = False
        self._password = SecretFile(config.password_file) if config.password_file else None
        self.relogins = 0

    # -- clients -----------------------------------------------------------
    def _client_config(self, namespace_id: str, work: Path) -> Any:
        from v2.nacos import ClientConfigBuilder

        cfg = self.config
        builder = (
            ClientConfigBuilder()
            .server_address(cfg.server_addr)
            .namespace_id(namespace_id)
            .timeout_ms(cfg.timeout_ms)
            .cache_dir(str(work / "cache" / namespace_id))
            .log_dir(str(work / "logs"))
            .load_cache_at_start(False)
            .log_level(logging.WARNING)
        )
        if cfg.username:
            password = self._password.value() if self._password is not None else cfg.password
            builder = builder.username(cfg.username).password(password)
        client_config = builder.build()
        client_config.set_update_cache_when_empty(True)
        return client_config

    async def _connect(self, namespace_id: str, work: Path) -> Any:
        from v2.nacos import NacosNamingService

        client: Any = None
        async for attempt in forever((Exception,), self._on_error(f"connect {namespace_id}")):
            with attempt:
                client = await asyncio.wait_for(
                    NacosNamingService.create_naming_service(
                        self._client_config(namespace_id, work)
                    ),
                    self.config.timeout_ms / 1000 + 5,
                )
        return client

    async def _follow_password(self) -> None:
        """Log in again with a rotated password_file, in every naming client.

        Nacos does not revoke tokens when a password changes, so the SDK would keep
        its old token until it expires and then fail to log in with the old
        password; logging in at once with the new one surfaces a wrong new password
        now, not hours later. The SDK has no public hook for this: its auth client is
        reached through private attributes, checked first.
        """
        assert self._password is not None
        while True:
            await asyncio.sleep(self.config.secret_check_s)
            if not self._password.changed():
                continue
            password = self._password.value()
            for namespace_id, client in list(self._clients.items()):
                auth = getattr(
                    getattr(
                        getattr(client, "grpc_client_proxy", None), "nacos_server_connector", None
                    ),
                    "auth_client",
                    None,
                )
                if auth is None or not hasattr(auth, "get_access_token"):
                    self.sink.failed(
                        "nacos_relogin",
                        "this nacos-sdk-python has no auth client: restart to use the new password",
                    )
                    return
                auth.password = password
                auth.client_config.password = password
                try:
                    await auth.get_access_token(True)
                except Exception as exc:  # noqa: BLE001 - the SDK raises NacosException and others
                    self.sink.failed(
                        "nacos_relogin",
                        f"namespace {namespace_id}: login with the new password failed: {exc}",
                    )
                    continue
                self.relogins += 1
                log.info(
                    "nacos: logged in again with the rotated password (namespace %s)", namespace_id
                )

    def _on_error(self, what: str) -> Callable[[BaseException, int], None]:
        def report(exc: BaseException, attempt: int) -> None:
            self.sink.failed(
                _reason(exc), f"{what}: {type(exc).__name__}: {exc} (attempt {attempt})"
            )

        return report

    async def run(self) -> None:
        own_dir = None
        if self.config.work_dir:
            work = Path(self.config.work_dir)
            await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        else:
            own_dir = tempfile.mkdtemp(prefix="syncmesh-edge-nacos-")
            work = Path(own_dir)
        follower: asyncio.Task[None] | None = None
        try:
            for configured in self.config.namespaces:
                namespace_id = nacos_namespace_id(configured)
                if namespace_id not in self._clients:
                    self._clients[namespace_id] = await self._connect(namespace_id, work)
            if self._password is not None:
                follower = asyncio.get_running_loop().create_task(self._follow_password())
            while True:
                complete = await self.list_once()
                if complete:
                    self.sink.recovered()
                    if not self._synced:
                        self._synced = True
                        self.sink.synced()
                await asyncio.sleep(self.config.list_interval_s)
        finally:
            if follower is not None:
                follower.cancel()
            for client in self._clients.values():
                with contextlib.suppress(Exception):
                    await client.shutdown()
            self._clients.clear()
            self._callbacks.clear()
            if own_dir is not None:
                shutil.rmtree(own_dir, ignore_errors=True)

    # -- listing -----------------------------------------------------------
    async def _list_group(self, client: Any, namespace_id: str, group: str) -> list[str]:
        from v2.nacos import ListServiceParam

        names: list[str] = []
        page = 1
        while True:
            self.sink.request("list")
            result = await asyncio.wait_for(
                client.list_services(
                    ListServiceParam(
                        namespace_id=namespace_id,
                        group_name=group,
                        page_no=page,
                        page_size=self.config.page_size,
                    )
                ),
                self.config.timeout_ms / 1000 + 5,
            )
            batch = list(result.services or [])
            names.extend(batch)
            if not batch or len(names) >= int(result.count or 0):
                return names
            page += 1

    async def list_once(self) -> bool:
        """One listing round: every namespace and group listed (new and removed services),
        then new services, failed ones and the safety-net slice followed; False if any part
        failed or a service was never read."""
        now = asyncio.get_running_loop().time()
        if self.plan is None:
            self.plan = FollowPlan(self.config.reread_interval_s, now)
        plan = self.plan
        complete = True
        for namespace_id, client in self._clients.items():
            for group in self.config.groups:
                try:
                    names = await self._list_group(client, namespace_id, group)
                except Exception as exc:  # the SDK raises NacosException or anything
                    self.sink.failed(
                        _reason(exc), f"list {namespace_id}/{group}: {type(exc).__name__}: {exc}"
                    )
                    complete = False
                    continue
                wanted = [n for n in names if self.may_accept(service_names(group, n)[1])]
                added, removed = self.catalog.on_list(namespace_id, group, wanted)
                plan.on_list(added, removed)
                if removed:
                    for key in removed:
                        await self._unsubscribe(client, key)
                    self.sink.apply(removed=[service_ref(k) for k in removed])
        limit = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)

        async def follow(key: NacosKey) -> bool:
            async with limit:
                ok = await self._follow(self._clients[key.namespace_id], key)
            plan.followed(key, ok)
            return ok

        due = plan.due(self.catalog.keys(), asyncio.get_running_loop().time())
        results = await asyncio.gather(*(follow(k) for k in due))
        return complete and all(results) and plan.pending_count == 0

    # -- subscriptions -----------------------------------------------------
    async def _follow(self, client: Any, key: NacosKey) -> bool:
        """Subscribe if new, then read the SDK's state (a new service's first state; for a
        known one, the safety net: covers a push whose callback was missed)."""
        from v2.nacos import ListInstanceParam, SubscribeServiceParam

        try:
            if key not in self._callbacks:
                callback = self._callback(key)
                self.sink.request("subscribe")
                await asyncio.wait_for(
                    client.subscribe(
                        SubscribeServiceParam(
                            service_name=key.service,
                            group_name=key.group,
                            subscribe_callback=callback,
                        )
                    ),
                    self.config.timeout_ms / 1000 + 5,
                )
                self._callbacks[key] = callback
            self.sink.request("read")
            instances = await asyncio.wait_for(
                client.list_instances(
                    ListInstanceParam(
                        service_name=key.service,
                        group_name=key.group,
                        subscribe=True,
                        healthy_only=None,
                    )
                ),
                self.config.timeout_ms / 1000 + 5,
            )
        except Exception as exc:  # the SDK raises NacosException or anything
            self.sink.failed(_reason(exc), f"subscribe {key}: {type(exc).__name__}: {exc}")
            return False
        self._publish(key, instances or [])
        return True

    def _callback(self, key: NacosKey) -> Callable[[list[Any]], Awaitable[None]]:
        async def on_push(instances: list[Any]) -> None:
            if key in self._callbacks:
                self._publish(key, instances or [])

        return on_push

    def _publish(self, key: NacosKey, instances: list[Any]) -> None:
        name, source_name = service_names(key.group, key.service)
        mapped, invalid = map_instances(source_name, instances)
        for bad in invalid:
            self.sink.invalid(bad.reason, bad.detail)
        self.sink.apply(
            changed=[
                SourceService(
                    namespace=syncmesh_namespace(key.namespace_id),
                    name=name,
                    source_name=source_name,
                    instances=tuple(mapped),
                )
            ]
        )

    async def _unsubscribe(self, client: Any, key: NacosKey) -> None:
        from v2.nacos import SubscribeServiceParam

        callback = self._callbacks.pop(key, None)
        if callback is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                client.unsubscribe(
                    SubscribeServiceParam(
                        service_name=key.service, group_name=key.group, subscribe_callback=callback
                    )
                ),
                self.config.timeout_ms / 1000 + 5,
            )

    # -- one-shot listing ----------------------------------------------------
    async def list_all_once(self) -> bool:
        """One complete listing without subscribing (``syncmesh audit``): every configured
        namespace and group, each service's instances read once through the same mapping
        and reported to the sink; False when any part failed (reported as ``failed``)."""
        from v2.nacos import ListInstanceParam, NacosNamingService

        timeout_s = self.config.timeout_ms / 1000 + 5
        own_dir = tempfile.mkdtemp(prefix="syncmesh-audit-nacos-")
        work = Path(self.config.work_dir or own_dir)
        complete = True
        try:
            for configured in self.config.namespaces:
                namespace_id = nacos_namespace_id(configured)
                try:
                    client = await asyncio.wait_for(
                        NacosNamingService.create_naming_service(
                            self._client_config(namespace_id, work)
                        ),
                        timeout_s,
                    )
                except Exception as exc:  # the SDK raises NacosException or anything
                    self.sink.failed(_reason(exc), f"connect {namespace_id}: {exc}")
                    return False
                self._clients[namespace_id] = client
                for group in self.config.groups:
                    try:
                        names = await self._list_group(client, namespace_id, group)
                        for name in names:
                            if not self.may_accept(service_names(group, name)[1]):
                                continue
                            instances = await asyncio.wait_for(
                                client.list_instances(
                                    ListInstanceParam(
                                        service_name=name,
                                        group_name=group,
                                        subscribe=False,
                                        healthy_only=None,
                                    )
                                ),
                                timeout_s,
                            )
                            self._publish(NacosKey(namespace_id, group, name), instances or [])
                    except Exception as exc:  # the SDK raises NacosException or anything
                        self.sink.failed(_reason(exc), f"list {namespace_id}/{group}: {exc}")
                        complete = False
        finally:
            for client in self._clients.values():
                with contextlib.suppress(Exception):
                    await client.shutdown()
            self._clients.clear()
            shutil.rmtree(own_dir, ignore_errors=True)
        if complete:
            self.sink.synced()
        return complete
