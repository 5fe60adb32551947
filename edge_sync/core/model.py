"""The source-neutral description of a service that every source produces, and the one
mapping of a source's instances to wire ``Instance``s."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec
from msgspec import Struct

from syncmesh.schema import Instance
from syncmesh.validate import is_instance_address

__all__ = [
    "DEFAULT_NAMESPACE",
    "SourceService",
    "ServiceRef",
    "InvalidInstance",
    "map_instances",
    "carried_subset",
    "MAX_SUBSET_VALUE",
    "MAX_TAGS",
]

# What ``Instance.version`` and each of ``Instance.tags`` can carry (schema limits).
MAX_SUBSET_VALUE = 63
MAX_TAGS = 64

DEFAULT_NAMESPACE = "default"


class ServiceRef(NamedTuple):
    """A service as its source identifies it: a syncmesh namespace and the name its label comes from."""

    namespace: str
    name: str


class SourceService(Struct, frozen=True, kw_only=True):
    """One service of the source, already mapped into a syncmesh namespace.

    ``name`` is what the DNS label is derived from; ``source_name`` is how the
    source spells it (Nacos ``GROUP@@svc`` has the name ``GROUP--svc``).
    """

    namespace: str
    name: str
    source_name: str
    instances: tuple[Instance, ...] = ()

    @property
    def ref(self) -> ServiceRef:
        return ServiceRef(self.namespace, self.name)


class InvalidInstance(ValueError):
    """An instance the source reported that the wire contract cannot carry."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def carried_subset(version: str, tags: Iterable[str]) -> dict[str, Any]:
    """The ``version`` and ``tags`` fields of a registry-sourced instance, as far as the
    wire can carry them.

    Consul and Nacos hold values no schema limit was made for (Consul tags such
    as Traefik routing rules run past 100 characters). Such a value can never
    be a DNS label either, so it is left out rather than costing the instance:
    a version longer than 63 characters is dropped, so are longer or empty
    tags, repeats, and tags past the 64th. (The service file is written by
    people and refused instead: ``map_instances`` enforces the schema.)
    """
    fields: dict[str, Any] = {}
    version = version.strip()
    if version and len(version) <= MAX_SUBSET_VALUE:
        fields["version"] = version
    kept: dict[str, None] = {}
    for tag in tags:
        tag = tag.strip()
        if tag and len(tag) <= MAX_SUBSET_VALUE:
            kept[tag] = None
            if len(kept) == MAX_TAGS:
                break
    if kept:
        fields["tags"] = list(kept)
    return fields


def _checked_instance(fields: dict[str, Any]) -> Instance:
    """Build an Instance and enforce the schema's constraints (length, port, weight)."""
    try:
        return msgspec.convert(fields, Instance)
    except msgspec.ValidationError as exc:
        raise InvalidInstance("invalid_instance", str(exc)) from None


def _what(where: str, n: int, fields: dict[str, Any]) -> str:
    # Only for a reject: 15,000 instances of an initial read need no description.
    return f"{where}: instance {n} ({fields.get('id', '?')!r})"


def map_instances(
    where: str, candidates: Iterable[dict[str, Any]]
) -> tuple[tuple[Instance, ...], list[InvalidInstance]]:
    """The instances of one service, from the fields each source derived, in source order.

    Every source (Consul, Nacos, the service file) maps through here, so they agree
    on one rule set, the registry's (``syncmesh.validate``):

    - an instance the schema cannot carry (length, port, weight) is rejected
      (``invalid_instance``), as is an address that is neither an IP literal nor a
      host name (``invalid_address``);
    - instance ids are unique within a service: the first instance with an id is
      kept and every later one is rejected (``duplicate_instance``), never merged.

    Rejects are returned for the source to report; what a source does with them
    is its policy (Consul and Nacos publish the rest, a service file is refused).
    """
    kept: dict[str, Instance] = {}
    rejects: list[InvalidInstance] = []
    for n, fields in enumerate(candidates):
        try:
            instance = _checked_instance(fields)
        except InvalidInstance as exc:
            rejects.append(InvalidInstance(exc.reason, f"{_what(where, n, fields)}: {exc.detail}"))
            continue
        if not is_instance_address(instance.address):
            detail = f"{instance.address!r} is not an IP or host name"
            rejects.append(
                InvalidInstance("invalid_address", f"{_what(where, n, fields)}: {detail}")
            )
            continue
        if instance.id in kept:
            detail = f"id {instance.id!r} used twice; first one kept"
            rejects.append(
                InvalidInstance("duplicate_instance", f"{_what(where, n, fields)}: {detail}")
            )
            continue
        kept[instance.id] = instance
    return tuple(kept.values()), rejects
