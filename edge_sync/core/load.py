"""Gateway loads, pure part: reading a number out of what a load source returns,
finding the gateway's instance in a Consul or Nacos answer, and the book of
current loads that the beat takes its ``Gateway.load`` values from.

The fetching (file, HTTP, Consul, Nacos) is ``edge_sync.io.load``. A source
that fails, or answers anything but a number from 0 to 100, makes the load
unknown (``None``): a registry never mistakes a broken source for an idle
gateway (0) and never demotes a cluster on a load it does not know.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from edge_sync.config import LoadSourceConfig
from syncmesh.schema import Gateway

__all__ = [
    "LoadError",
    "GatewayKey",
    "gateway_key",
    "parse_load",
    "consul_load_text",
    "nacos_load_text",
    "GatewayLoads",
]

GatewayKey = tuple[str, int]
# Longer answers are not "a number": refuse before parsing them.
MAX_TEXT = 256
_OUTPUT_MARK = "Output:"


class LoadError(ValueError):
    """Why a load could not be read; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def gateway_key(address: str, port: int) -> GatewayKey:
    try:
        return str(ipaddress.ip_address(address)), port
    except ValueError:
        return address.lower(), port


def parse_load(text: str) -> int:
    """``"42"``, ``" 42.4 "``, ``"42%"`` -> 42. Anything else raises ``LoadError``."""
    value = text.strip()
    if len(value) > MAX_TEXT:
        raise LoadError("load_malformed", f"{len(value)} characters is not a number")
    if value.endswith("%"):
        value = value[:-1].rstrip()
    try:
        number = float(value)
    except ValueError:
        raise LoadError("load_malformed", f"{value[:40]!r} is not a number") from None
    if not math.isfinite(number) or not 0 <= number <= 100:
        raise LoadError("load_range", f"{value[:40]} is not between 0 and 100")
    return round(number)


def _check_output(output: str) -> str:
    """A check's output: the number itself, or what follows an HTTP check's ``Output:``."""
    if _OUTPUT_MARK in output:
        return output.rsplit(_OUTPUT_MARK, 1)[1]
    return output


def _addresses(entry: dict[str, Any]) -> set[str]:
    node, svc = entry.get("Node") or {}, entry.get("Service") or {}
    found = {str(svc.get("Address") or node.get("Address") or "")}
    for tagged in (svc.get("TaggedAddresses") or {}).values():
        if isinstance(tagged, dict) and tagged.get("Address"):
            found.add(str(tagged["Address"]))
    return {gateway_key(a, 0)[0] for a in found if a}


def consul_load_text(entries: Any, source: LoadSourceConfig) -> str:
    """The load text of the gateway's instance in ``/v1/health/service/<service>``.

    The instance is the one with ``service_id``, else the one with the gateway's
    port and one of its addresses (service address, node address, or any tagged
    address, since a mesh gateway's WAN address is a tagged one).
    """
    if not isinstance(entries, list):
        raise LoadError("load_malformed", f"consul service {source.service!r}: not a list")
    want_address, port = gateway_key(source.address, source.port)
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Service"), dict):
            continue
        svc = entry["Service"]
        if source.service_id:
            if svc.get("ID") != source.service_id:
                continue
        elif svc.get("Port") != port or want_address not in _addresses(entry):
            continue
        if source.check_id:
            for check in entry.get("Checks") or ():
                if isinstance(check, dict) and check.get("CheckID") == source.check_id:
                    return _check_output(str(check.get("Output") or ""))
            raise LoadError("load_no_value", f"instance has no check {source.check_id!r}")
        meta = svc.get("Meta") or {}
        if isinstance(meta, dict) and source.meta_key in meta:
            return str(meta[source.meta_key])
        raise LoadError("load_no_value", f"instance has no meta {source.meta_key!r}")
    which = source.service_id or f"{source.address}:{source.port}"
    raise LoadError("load_no_instance", f"consul service {source.service!r} has no {which}")


def nacos_load_text(reply: Any, source: LoadSourceConfig) -> str:
    """The load text of the gateway's instance (same ip and port) in a Nacos
    ``/v1/ns/instance/list`` reply: its metadata ``metadata_key``."""
    hosts = reply.get("hosts") if isinstance(reply, dict) else None
    if not isinstance(hosts, list):
        raise LoadError("load_malformed", f"nacos service {source.service!r}: no host list")
    want = gateway_key(source.address, source.port)
    for host in hosts:
        if not isinstance(host, dict):
            continue
        if gateway_key(str(host.get("ip", "")), host.get("port", 0)) != want:
            continue
        metadata = host.get("metadata") or {}
        if isinstance(metadata, dict) and source.metadata_key in metadata:
            return str(metadata[source.metadata_key])
        raise LoadError("load_no_value", f"instance has no metadata {source.metadata_key!r}")
    raise LoadError(
        "load_no_instance",
        f"nacos service {source.service!r} has no instance {source.address}:{source.port}",
    )


class GatewayLoads:
    """The current load of each gateway that has a source (None until read, and
    after a failure), and which sources are failing (so each streak logs once)."""

    def __init__(self, sources: Iterable[LoadSourceConfig] = ()) -> None:
        self._loads: dict[GatewayKey, int | None] = {
            gateway_key(s.address, s.port): None for s in sources
        }
        self._failing: dict[GatewayKey, str] = {}
        # What the last beat carried, to tell whether a read is worth a beat now.
        self._announced: dict[GatewayKey, int | None] = dict(self._loads)

    def succeeded(self, key: GatewayKey, load: int) -> bool:
        """Record a read; True when the source was failing until now (log the recovery)."""
        self._loads[key] = load
        return self._failing.pop(key, None) is not None

    def failed(self, key: GatewayKey, error: LoadError) -> bool:
        """Record a failed read: the load is unknown now. True for the first failure of
        a streak, or a failure for another reason (log it); repeats are only counted."""
        self._loads[key] = None
        previous = self._failing.get(key)
        self._failing[key] = error.reason
        return previous != error.reason

    def load(self, key: GatewayKey) -> int | None:
        return self._loads.get(key)

    @property
    def failing(self) -> int:
        return len(self._failing)

    def announce(self, gateways: Sequence[Gateway]) -> None:
        """Remember the loads a beat about to be sent carries."""
        for g in gateways:
            self._announced[gateway_key(g.address, g.port)] = g.load

    def moved(self, step_pct: int) -> bool:
        """A load differs by ``step_pct`` or more from what the last beat carried,
        or turned known or unknown since (``step_pct`` 0: never)."""
        if step_pct <= 0:
            return False
        for key, load in self._loads.items():
            announced = self._announced.get(key)
            if (load is None) != (announced is None):
                return True
            if load is not None and announced is not None and abs(load - announced) >= step_pct:
                return True
        return False

    def apply(self, gateways: Sequence[Gateway]) -> list[Gateway]:
        """The configured gateways with their current loads, for the beat."""
        out = []
        for g in gateways:
            load = self._loads.get(gateway_key(g.address, g.port))
            out.append(g if g.load == load else msgspec.structs.replace(g, load=load))
        return out
