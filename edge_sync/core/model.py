"""The source-neutral description of a service that every source produces."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from msgspec import Struct

from syncmesh.schema import Instance

__all__ = [
    "DEFAULT_NAMESPACE",
    "SourceService",
    "ServiceRef",
    "InvalidInstance",
    "checked_instance",
]

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


def checked_instance(fields: dict[str, Any]) -> Instance:
    """Build an Instance and enforce the schema's constraints (length, port, weight)."""
    try:
        return msgspec.convert(fields, Instance)
    except msgspec.ValidationError as exc:
        raise InvalidInstance("invalid_instance", f"{fields.get('id', '?')}: {exc}") from None
