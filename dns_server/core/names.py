"""Which kind of name a question asks about, from its labels alone.

Below ``svc.<zone>`` the number of labels tells the form apart::

    <service>.svc.<zone>                              namespace "default"
    <service>.<namespace>.svc.<zone>
    <cluster>.<service>.<namespace>.svc.<zone>        pinned to one cluster
    <gateway>.<cluster>.<service>.<namespace>.svc.<zone>
                                                      SRV target: one gateway
    <version>.version.<service>.<namespace>.svc.<zone>
    <tag>.tag.<service>.<namespace>.svc.<zone>        subsets: instances of one
                                                      version / with one tag

A subset name has the same number of labels as a gateway target name; the
marker label (``version``, ``tag``) in the cluster's place tells them apart,
which is why agents refuse those two words as cluster names. ``version`` and
``tag`` directly under a service (``version.<service>.<namespace>``) are empty
non-terminals, so qname-minimising resolvers walk down to the subset names.
A marker label rather than a leading ``_`` (``_v``), because older glibc
(< 2.34) refuses address answers for names whose labels start with ``_``.

``<gateway>`` is the gateway's IP address as a label (``10-0-0-1``; IPv6 as
its eight groups in hex without leading zeros joined by ``-``, ``fd00-0-0-0-0-0-0-9``),
so a target name never changes while the gateway exists.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from syncmesh.labels import subset_label
from syncmesh.view_api import ServiceKey, Subset

__all__ = [
    "NameKind",
    "NameRef",
    "classify",
    "gateway_label",
    "gateway_target",
    "service_name",
    "DEFAULT_NAMESPACE",
    "VERSION_MARKER",
    "TAG_MARKER",
    "SUBSET_MARKERS",
    "subset_name",
]

DEFAULT_NAMESPACE = "default"
VERSION_MARKER = "version"
TAG_MARKER = "tag"
SUBSET_MARKERS = frozenset({VERSION_MARKER, TAG_MARKER})


class NameKind(Enum):
    OUTSIDE = "outside"
    APEX = "apex"
    NAME_SERVER = "name_server"
    # A name that exists only because names below it do (``svc.<zone>``).
    EMPTY_NON_TERMINAL = "ent"
    SERVICE = "service"
    PINNED = "pinned"
    TARGET = "target"
    # ``version.<service>.<namespace>.svc``: exists (no data) while the service does.
    SUBSET_PARENT = "subset_parent"
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
    # Only instances of this version / with this tag (a SERVICE name).
    subset: Subset | None = None


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
        if below[0] in SUBSET_MARKERS:
            return NameRef(NameKind.SUBSET_PARENT, ServiceKey(below[2], below[1]))
        return NameRef(NameKind.PINNED, ServiceKey(below[2], below[1]), cluster=below[0])
    if len(below) == 4:
        if below[1] in SUBSET_MARKERS:
            value = subset_label(below[0])
            if value is None:
                return NameRef(NameKind.UNKNOWN)
            if below[1] == VERSION_MARKER:
                subset = Subset(version=value)
            else:
                subset = Subset(tags=frozenset((value,)))
            return NameRef(NameKind.SERVICE, ServiceKey(below[3], below[2]), subset=subset)
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


def subset_name(
    key: ServiceKey, zone: str, version: str | None = None, tag: str | None = None
) -> str:
    """The DNS name of a version (or tag) subset of a service; values in any spelling."""
    marker, value = (VERSION_MARKER, version) if version is not None else (TAG_MARKER, tag)
    label = subset_label(value or "")
    if label is None:
        raise ValueError(f"{value!r} has no DNS label form")
    return f"{label}.{marker}.{service_name(key, zone)}"


def gateway_target(address: str, cluster: str, key: ServiceKey, zone: str) -> str:
    """SRV target for a gateway: a name in the zone, or the gateway's own host name."""
    label = gateway_label(address)
    if label is None:
        return address.lower().rstrip(".") + "."
    return f"{label}.{cluster}.{service_name(key, zone)}"
