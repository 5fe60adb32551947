"""Which kind of name a question asks about, from its labels alone.

Below ``svc.<zone>`` the number of labels tells the form apart::

    <service>.svc.<zone>                              namespace "default"
    <service>.<namespace>.svc.<zone>
    <cluster>.<service>.<namespace>.svc.<zone>        pinned to one cluster
    <gateway>.<cluster>.<service>.<namespace>.svc.<zone>
                                                      SRV target: one gateway

``<gateway>`` is the gateway's IP address as a label (``10-0-0-1``; IPv6 as
its eight groups in hex without leading zeros joined by ``-``, ``fd00-0-0-0-0-0-0-9``),
so a target name never changes while the gateway exists.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from syncmesh.view_api import ServiceKey

__all__ = [
    "NameKind",
    "NameRef",
    "classify",
    "gateway_label",
    "gateway_target",
    "service_name",
    "DEFAULT_NAMESPACE",
]

DEFAULT_NAMESPACE = "default"


class NameKind(Enum):
    OUTSIDE = "outside"
    APEX = "apex"
    NAME_SERVER = "name_server"
    # A name that exists only because names below it do (``svc.<zone>``).
    EMPTY_NON_TERMINAL = "ent"
    SERVICE = "service"
    PINNED = "pinned"
    TARGET = "target"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class NameRef:
    kind: NameKind
    key: ServiceKey | None = None
    cluster: str | None = None
    gateway: str | None = None
    # A one-label name under ``svc`` is also a namespace (an empty non-terminal
    # when the namespace has services), so it depends on that namespace too.
    short_form: bool = False


def classify(qname: str, zone: str, ns_names: frozenset[str]) -> NameRef:
    """``qname`` and ``zone``: lower case, absolute (trailing dot)."""
    if qname == zone:
        return NameRef(NameKind.APEX)
    if not qname.endswith("." + zone):
        return NameRef(NameKind.OUTSIDE)
    if qname in ns_names:
        return NameRef(NameKind.NAME_SERVER)
    labels = qname[: -len(zone) - 1].split(".")
    if labels[-1] != "svc" or "" in labels:
        return NameRef(NameKind.UNKNOWN)
    below = labels[:-1]
    if not below:
        return NameRef(NameKind.EMPTY_NON_TERMINAL)
    if len(below) == 1:
        return NameRef(NameKind.SERVICE, ServiceKey(DEFAULT_NAMESPACE, below[0]), short_form=True)
    if len(below) == 2:
        return NameRef(NameKind.SERVICE, ServiceKey(below[1], below[0]))
    if len(below) == 3:
        return NameRef(NameKind.PINNED, ServiceKey(below[2], below[1]), cluster=below[0])
    if len(below) == 4:
        return NameRef(
            NameKind.TARGET, ServiceKey(below[3], below[2]), cluster=below[1], gateway=below[0]
        )
    return NameRef(NameKind.UNKNOWN)


def gateway_label(address: str) -> str | None:
    """The label naming a gateway at an IP address; None for a host name."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip).replace(".", "-")
    return "-".join(f"{int(group, 16):x}" for group in ip.exploded.split(":"))


def service_name(key: ServiceKey, zone: str) -> str:
    return f"{key.service}.{key.namespace}.svc.{zone}"


def gateway_target(address: str, cluster: str, key: ServiceKey, zone: str) -> str:
    """SRV target for a gateway: a name in the zone, or the gateway's own host name."""
    label = gateway_label(address)
    if label is None:
        return address.lower().rstrip(".") + "."
    return f"{label}.{cluster}.{service_name(key, zone)}"
