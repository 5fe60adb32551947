"""Builders of well-formed stream messages, for tests, benchmarks and examples.

Defaults describe one healthy instance and one beat; keyword arguments
override any field. Every message needs an epoch its cluster claimed
(``syncmesh.epochs``):

- on a real stream, ``epoch = await claim_epoch(js, "east")`` claims one the
  way an agent does, and ``publish`` stores messages built with it;
- for the pure cores, ``ScriptedStream`` hands out stream sequences and has
  every cluster claim ``epoch=1`` (the builders' default) at sequence 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from global_registry.core.records import Applied
from global_registry.core.view import RegistryView
from syncmesh import subjects
from syncmesh.schema import (
    SCHEMA_VERSION,
    ClusterBeat,
    EpochClaim,
    Gateway,
    Instance,
    Locality,
    ServiceState,
    encode,
)

__all__ = [
    "instance",
    "service_state",
    "cluster_beat",
    "epoch_claim",
    "subject_of",
    "publish",
    "claim_epoch",
    "ScriptedStream",
]


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


def epoch_claim(cluster: str, **fields: Any) -> EpochClaim:
    values: dict[str, Any] = {"schema": SCHEMA_VERSION, "cluster": cluster, "agent": "samples"}
    values.update(fields)
    return EpochClaim(**values)


def subject_of(message: ServiceState | ClusterBeat | EpochClaim) -> str:
    if isinstance(message, ServiceState):
        return subjects.service_subject(message.cluster, message.namespace, message.service)
    if isinstance(message, ClusterBeat):
        return subjects.cluster_subject(message.cluster)
    return subjects.epoch_subject(message.cluster)


async def publish(js: Any, message: ServiceState | ClusterBeat, subject: str | None = None) -> int:
    """Store ``message`` in the stream (on its own subject unless told); returns its sequence."""
    ack = await js.publish(
        subject or subject_of(message),
        encode(message),
        headers={"Nats-Msg-Id": subjects.msg_id(message.cluster, message.epoch, message.revision)},
    )
    return int(ack.seq)


async def claim_epoch(js: Any, cluster: str) -> int:
    """Take over ``cluster`` as an agent does; returns the new epoch (the claim's sequence).

    A compare-and-set publish: it fails if another claim landed since the one
    read here, so two claimants cannot both win.
    """
    from nats.js.errors import NotFoundError

    subject = subjects.epoch_subject(cluster)
    try:
        previous = int((await js.get_last_msg(subjects.STREAM, subject)).seq)
    except NotFoundError:
        previous = 0
    ack = await js.publish(
        subject,
        encode(epoch_claim(cluster, previous=previous)),
        headers={"Nats-Expected-Last-Subject-Sequence": str(previous)},
    )
    return int(ack.seq)


class ScriptedStream:
    """Feeds the pure view as a stream would: increasing sequences, claims first.

    Each cluster's first message is preceded by its claim of ``epoch``, stored at
    sequence ``epoch`` (claims of different clusters may share one here: the
    view fences each cluster on its own); messages follow from ``epoch + 1``.
    """

    def __init__(self, view: RegistryView, epoch: int = 1) -> None:
        self.view = view
        self.epoch = epoch
        self.seq = epoch
        self._claimed: set[str] = set()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def claim(self, cluster: str) -> None:
        if cluster not in self._claimed:
            self._claimed.add(cluster)
            self.view.apply_claim(epoch_claim(cluster), self.epoch)

    def apply(
        self,
        message: ServiceState | ClusterBeat,
        now: float = 0.0,
        age_s: float = 0.0,
        seq: int | None = None,
    ) -> Applied:
        """Apply at the next sequence (or ``seq``); raises what the view raises."""
        self.claim(message.cluster)
        return self.view.apply(message, self.next_seq() if seq is None else seq, now, age_s)


def service_file_text(services: Mapping[str, Iterable[tuple[str, int, str]]]) -> str:
    """A file source's TOML: each service with its (address, port, health)
    instances; services with none are left out, and no service at all is
    ``services = []``."""
    lines: list[str] = []
    for name, instances in services.items():
        entries = list(instances)
        if not entries:
            continue
        lines += ["[[services]]", f'name = "{name}"']
        for address, port, health in entries:
            lines += [
                "[[services.instances]]",
                f'address = "{address}"',
                f"port = {port}",
                f'health = "{health}"',
            ]
    return "\n".join(lines) + "\n" if lines else "services = []\n"


def one_instance_file(services: Mapping[str, str]) -> str:
    """A file source's TOML: each service (name -> address) with one passing
    instance on port 80."""
    return service_file_text(
        {name: [(address, 80, "passing")] for name, address in services.items()}
    )
