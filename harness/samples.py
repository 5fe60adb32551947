"""Builders of well-formed stream messages, for tests, benchmarks and examples.

Defaults describe one healthy instance and one beat; keyword arguments
override any field. ``publish`` puts a message on its subject the way an
agent does (with ``Nats-Msg-Id``), through JetStream so it is stored.
"""

from __future__ import annotations

from typing import Any

from syncmesh import subjects
from syncmesh.schema import (
    SCHEMA_VERSION,
    ClusterBeat,
    Gateway,
    Instance,
    Locality,
    ServiceState,
    encode,
)

__all__ = ["instance", "service_state", "cluster_beat", "subject_of", "publish"]


def instance(
    id: str = "i1", address: str = "10.0.0.1", port: int = 8080, **fields: Any
) -> Instance:
    return Instance(id=id, address=address, port=port, **fields)


def service_state(
    cluster: str,
    service: str,
    namespace: str = "default",
    *,
    epoch: int = 1,
    revision: int = 1,
    instances: list[Instance] | None = None,
    **fields: Any,
) -> ServiceState:
    values: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "cluster": cluster,
        "namespace": namespace,
        "service": service,
        "epoch": epoch,
        "revision": revision,
        "source": "file",
        "source_name": service,
        "instances": [instance()] if instances is None else instances,
    }
    values.update(fields)
    return ServiceState(**values)


def cluster_beat(
    cluster: str,
    *,
    epoch: int = 1,
    revision: int = 1,
    interval_s: float = 5.0,
    gateways: list[Gateway] | None = None,
    region: str = "",
    zone: str = "",
    client_cidrs: list[str] | None = None,
    **fields: Any,
) -> ClusterBeat:
    values: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "cluster": cluster,
        "epoch": epoch,
        "revision": revision,
        "interval_s": interval_s,
        "gateways": [Gateway(address="192.0.2.1", port=443)] if gateways is None else gateways,
        "locality": Locality(region=region, zone=zone),
        "client_cidrs": client_cidrs or [],
    }
    values.update(fields)
    return ClusterBeat(**values)


def subject_of(message: ServiceState | ClusterBeat) -> str:
    if isinstance(message, ServiceState):
        return subjects.service_subject(message.cluster, message.namespace, message.service)
    return subjects.cluster_subject(message.cluster)


async def publish(js: Any, message: ServiceState | ClusterBeat, subject: str | None = None) -> int:
    """Store ``message`` in the stream (on its own subject unless told); returns its sequence."""
    ack = await js.publish(
        subject or subject_of(message),
        encode(message),
        headers={"Nats-Msg-Id": subjects.msg_id(message.cluster, message.epoch, message.revision)},
    )
    return int(ack.seq)
