"""The IO side of ``bench/propagation.py``: how a change is made, and how it is seen.

- ``ConsulDriver`` and ``NacosDriver``: one change through the source's own API,
  with its reference watch armed (a Consul blocking query already parked) before it;
- ``DnsProbe``: one UDP socket, one query in flight, polled every millisecond;
- ``NatsTap``: every service state the agents put on NATS, with its arrival time,
  so the DNS latency can be split into "source -> NATS" and "NATS -> DNS";
- ``ConsulBlockingWatch`` and ``NacosPushWatch``: the sources' own change
  notifications (a Consul blocking query, a nacos-sdk-python v2 push), the
  reference every syncmesh latency is compared with.

Every time here is ``loop.time()`` of the bench's loop; nothing reads another clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import aiohttp
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import msgspec

from syncmesh import subjects
from syncmesh.schema import ServiceState, decode_service_state

__all__ = [
    "Shape",
    "Step",
    "ConsulDriver",
    "NacosDriver",
    "Driver",
    "DnsAnswer",
    "DnsProbe",
    "NatsTap",
    "ConsulBlockingWatch",
    "NacosPushWatch",
    "shape_of_state",
    "consul_entries_passing",
    "consul_entries_critical",
    "consul_entries_empty",
]

# What a name looks like in DNS (and what a service state will turn into there):
# gateway addresses, a known name without healthy instances, or an unknown name.
Shape = Literal["address", "nodata", "nxdomain", "other"]


class Step(NamedTuple):
    """One change: what is done to which service, and how its DNS answer must end up."""

    service: str
    kind: str
    dns: Shape


POLL_INTERVAL_S = 0.001
QUERY_TIMEOUT_S = 0.5


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 2:
            return
        future = self.waiting.pop(int.from_bytes(data[:2], "big"), None)
        if future is not None and not future.done():
            future.set_result(data)


@dataclass(frozen=True)
class DnsAnswer:
    shape: Shape
    addresses: tuple[str, ...]


class DnsProbe:
    """Polls one name until its A answer has the wanted shape (and address)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self._server = server
        self._ids = itertools.cycle(range(1, 65536))
        self._transport: asyncio.DatagramTransport | None = None
        self._replies = _Replies()
        self.queries = 0
        self.lost = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self._replies, remote_addr=self._server
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def ask(self, name: str) -> DnsAnswer | None:
        assert self._transport is not None, "open() first"
        query = dns.message.make_query(name, dns.rdatatype.A)
        query.id = next(self._ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._replies.waiting[query.id] = future
        self.queries += 1
        self._transport.sendto(query.to_wire())
        try:
            wire = await asyncio.wait_for(future, QUERY_TIMEOUT_S)
        except TimeoutError:
            self._replies.waiting.pop(query.id, None)
            self.lost += 1
            return None
        reply = dns.message.from_wire(wire)
        rcode = reply.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return DnsAnswer("nxdomain", ())
        if rcode != dns.rcode.NOERROR or reply.flags & dns.flags.TC:
            return DnsAnswer("other", ())
        addresses = tuple(
            sorted(
                item.address
                for rrset in reply.answer
                for item in rrset
                if rrset.rdtype == dns.rdatatype.A
            )
        )
        return DnsAnswer("address" if addresses else "nodata", addresses)

    async def wait_for(
        self, name: str, shape: Shape, address: str, deadline: float
    ) -> float | None:
        """When the answer first had ``shape`` (with exactly ``address`` for "address"), or None."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            answer = await self.ask(name)
            if (
                answer is not None
                and answer.shape == shape
                and (shape != "address" or answer.addresses == (address,))
            ):
                return loop.time()
            await asyncio.sleep(POLL_INTERVAL_S)
        return None


def shape_of_state(state: ServiceState) -> Shape:
    if state.deleted:
        return "nxdomain"
    if any(i.health != "critical" for i in state.instances):
        return "address"
    return "nodata"


@dataclass
class NatsTap:
    """Arrival times of the service states on NATS, per (cluster, service)."""

    seen: dict[tuple[str, str], list[tuple[float, Shape]]] = field(default_factory=dict)
    received: int = 0
    undecodable: int = 0
    errors: int = 0
    _nc: Any = None

    async def start(self, url: str) -> None:
        import nats

        loop = asyncio.get_running_loop()

        async def on_msg(msg: Any) -> None:
            at = loop.time()
            self.received += 1
            key = subjects.parse_subject(msg.subject)
            try:
                state = decode_service_state(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                state = None
            if key is None or key.kind != "svc" or state is None:
                self.undecodable += 1
                return
            self.seen.setdefault((key.cluster, key.service), []).append((at, shape_of_state(state)))

        async def on_error(_exc: Exception) -> None:
            # A slow consumer here would hide states and make "source -> NATS" look missing.
            self.errors += 1

        self._nc = await nats.connect(url, name="propagation-bench-tap", error_cb=on_error)
        await self._nc.subscribe(subjects.SVC_WILDCARD, cb=on_msg)
        await self._nc.flush()

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    def first(self, cluster: str, service: str, shape: Shape, after: float) -> float | None:
        for at, seen in self.seen.get((cluster, service), ()):
            if at >= after and seen == shape:
                return at
        return None


ConsulWant = Callable[[list[dict[str, Any]]], bool]


class ConsulBlockingWatch:
    """``GET /v1/health/service/<svc>?index=…&wait=10s``, parked in Consul *before* the change.

    ``arm`` reads the current index, issues the blocking query and gives Consul
    ``PARK_S`` to park it, and only then returns; the change is made after that,
    so what is measured is how long a watcher that was already waiting takes to
    wake up with the new state (the way a Consul client sees a change), not the
    time of a fresh read after the change. If the first wake-up does not show
    the wanted state yet, the watch blocks again from the new index.
    """

    PARK_S = 0.05

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._url = url

    async def _get(
        self, service: str, index: int | None, wait_s: float = 10.0
    ) -> tuple[list[dict[str, Any]], int]:
        params = {} if index is None else {"index": str(index), "wait": f"{wait_s:.0f}s"}
        async with self._http.get(f"{self._url}/v1/health/service/{service}", params=params) as r:
            r.raise_for_status()
            body = await r.json()
            return body, int(r.headers.get("X-Consul-Index", "0"))

    async def arm(
        self, service: str, want: ConsulWant
    ) -> Callable[[float], Awaitable[float | None]]:
        """Park a blocking query on the service's current index; returns the waiter."""
        loop = asyncio.get_running_loop()
        _, index = await self._get(service, None)
        first = asyncio.ensure_future(self._get(service, max(1, index)))
        await asyncio.sleep(self.PARK_S)
        if first.done():
            # Woke before the change was made: something else changed the service.
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await first
            return await self.arm(service, want)

        async def wait_for(deadline: float) -> float | None:
            pending: asyncio.Future[tuple[list[dict[str, Any]], int]] = first
            try:
                async with asyncio.timeout_at(deadline):
                    while True:
                        body, new_index = await pending
                        if want(body):
                            return loop.time()
                        pending = asyncio.ensure_future(self._get(service, max(1, new_index)))
            except TimeoutError:
                return None
            finally:
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pending

        return wait_for


def consul_entries_passing(body: list[dict[str, Any]]) -> bool:
    return len(body) == 1 and all(c.get("Status") == "passing" for c in body[0].get("Checks", ()))


def consul_entries_critical(body: list[dict[str, Any]]) -> bool:
    return len(body) == 1 and any(c.get("Status") == "critical" for c in body[0].get("Checks", ()))


def consul_entries_empty(body: list[dict[str, Any]]) -> bool:
    return body == []


class NacosPushWatch:
    """One nacos-sdk-python v2 client subscribed to every bench service; pushes kept with their time."""

    def __init__(self, server_addr: str, workdir: Path) -> None:
        self._server_addr = server_addr
        self._workdir = workdir
        self._client: Any = None
        self.pushes: dict[str, list[tuple[float, int]]] = {}
        self._arrived: dict[str, asyncio.Event] = {}

    async def start(self, services: Iterable[str]) -> None:
        from v2.nacos import ClientConfigBuilder, NacosNamingService, SubscribeServiceParam

        config = (
            ClientConfigBuilder()
            .server_address(self._server_addr)
            .cache_dir(str(self._workdir / "cache"))
            .log_dir(str(self._workdir / "logs"))
            .load_cache_at_start(False)
            .log_level(logging.WARNING)
            .build()
        )
        # Without it the SDK drops the push that empties a service.
        config.set_update_cache_when_empty(True)
        self._client = await NacosNamingService.create_naming_service(config)
        loop = asyncio.get_running_loop()
        for service in services:
            self.pushes[service] = []
            self._arrived[service] = asyncio.Event()

            async def on_push(instances: list[Any], service: str = service) -> None:
                usable = sum(1 for i in instances or () if i.enabled and i.healthy)
                self.pushes[service].append((loop.time(), usable))
                self._arrived[service].set()

            await self._client.subscribe(
                SubscribeServiceParam(service_name=service, subscribe_callback=on_push)
            )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.shutdown()
        # The SDK adds a file handler to the shared "naming" logger and never removes it.
        logger = logging.getLogger("naming")
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)

    def mark(self, service: str) -> int:
        self._arrived[service].clear()
        return len(self.pushes[service])

    async def wait_for(
        self, service: str, mark: int, usable: bool, deadline: float
    ) -> float | None:
        """The first push after ``mark`` with (or without) a usable instance, or None."""
        seen = mark
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while True:
                    pushes = self.pushes[service]
                    for at, count in pushes[seen:]:
                        if (count > 0) == usable:
                            return at
                    seen = len(pushes)
                    self._arrived[service].clear()
                    await self._arrived[service].wait()
        return None


# -- sources: how a step is made, and how the source itself reports it ---------------

Reference = Callable[[float], Awaitable[float | None]]


class ConsulDriver:
    source, cluster, gateway = "consul", "east", "127.0.0.2"

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http, self._url = http, url
        self._watch = ConsulBlockingWatch(http, url)

    async def arm(self, step: Step) -> Reference:
        want = {
            "register": consul_entries_passing,
            "critical": consul_entries_critical,
            "deregister": consul_entries_empty,
        }[step.kind]
        return await self._watch.arm(step.service, want)

    async def apply(self, step: Step) -> None:
        agent = f"{self._url}/v1/agent/service"
        if step.kind == "register":
            number = int(step.service.rsplit("-", 1)[1])
            body = {
                "ID": step.service,
                "Name": step.service,
                "Port": 8080,
                "Address": f"10.1.{number // 250}.{number % 250 + 1}",
            }
            request = self._http.put(f"{agent}/register", json=body)
        elif step.kind == "critical":
            request = self._http.put(
                f"{agent}/maintenance/{step.service}", params={"enable": "true"}
            )
        else:
            request = self._http.put(f"{agent}/deregister/{step.service}")
        async with request as r:
            r.raise_for_status()


class NacosDriver:
    source, cluster, gateway = "nacos", "west", "127.0.0.3"

    def __init__(
        self, http: aiohttp.ClientSession, server_addr: str, port: int, pushes: NacosPushWatch
    ) -> None:
        self._http, self._pushes = http, pushes
        self._url = f"http://{server_addr}/nacos/v1/ns/instance"
        self._port = port

    async def arm(self, step: Step) -> Reference:
        mark = self._pushes.mark(step.service)
        usable = step.dns == "address"
        return lambda deadline: self._pushes.wait_for(step.service, mark, usable, deadline)

    async def apply(self, step: Step) -> None:
        # The west gateway's real listener: Nacos TCP-checks persistent instances, and an
        # address nobody listens on would turn unhealthy on its own in the middle of a cycle.
        params = {
            "serviceName": step.service,
            "ip": self.gateway,
            "port": str(self._port),
            "ephemeral": "false",
        }
        if step.kind == "register":
            request = self._http.post(self._url, params=params)
        elif step.kind in ("disable", "enable"):
            enabled = "true" if step.kind == "enable" else "false"
            request = self._http.put(self._url, params={**params, "enabled": enabled})
        else:
            request = self._http.delete(self._url, params=params)
        async with request as r:
            r.raise_for_status()
            if (await r.text()).strip() != "ok":
                raise RuntimeError(f"nacos {step.kind} {step.service}: unexpected answer")


Driver = ConsulDriver | NacosDriver
