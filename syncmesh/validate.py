"""Validation of every stream message before it may touch the view.

Order of checks: size, subject, schema (decode), schema version, the subject
naming the same cluster and key as the payload, per-message limits, then the
content (addresses, CIDRs, duplicate instance ids). An ``EpochClaim`` has no
content to check beyond its cluster; whether a message's epoch was claimed is
the consumer's judgement (``syncmesh.epochs``), since it needs the claims read so far. The subject is checked
before the payload because a publisher's NATS permissions bind it to its own
subjects: a payload that claims another cluster is a spoof.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable

import msgspec

from syncmesh import subjects
from syncmesh.errors import SyncmeshError
from syncmesh.limits import LimitsConfig
from syncmesh.schema import (
    SCHEMA_VERSION,
    ClusterBeat,
    EpochClaim,
    ServiceState,
    decode_cluster_beat,
    decode_epoch_claim,
    decode_service_state,
)

__all__ = [
    "REJECT_REASONS",
    "Rejected",
    "StreamMessage",
    "validate_message",
    "parse_cidr",
    "is_ip",
    "is_instance_address",
]

REJECT_REASONS = (
    "oversize",
    "subject",
    "schema",
    "schema-version",
    "label",
    "cluster-mismatch",
    "key-mismatch",
    "address",
    "cidr",
    "duplicate-instance",
    "too-many-instances",
    "too-many-gateways",
    "too-many-cidrs",
    "too-many-services",
    "too-many-clusters",
    # Epoch fencing (syncmesh.epochs), judged by the consumer against the claims it has read.
    "future-epoch",
    "unclaimed-epoch",
    "deposed",
)

StreamMessage = ServiceState | ClusterBeat | EpochClaim
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class Rejected(SyncmeshError):
    """A message that changes nothing; ``reason`` is one of ``REJECT_REASONS``.

    ``cluster`` is the cluster the *subject* names (the payload is not trusted),
    or "" when the subject is not one of ours.
    """

    def __init__(self, reason: str, cluster: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.cluster = cluster


def _is_hostname(name: str) -> bool:
    # An all-digit last label ("10.0.0.300") is a broken IPv4 address, not a name (RFC 3696).
    return bool(_HOSTNAME.match(name)) and not name.rstrip(".").rsplit(".", 1)[-1].isdigit()


_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6


def is_ip(address: str) -> bool:
    # inet_pton is strict (no shorthand like "10.1") and much faster than ipaddress.
    try:
        socket.inet_pton(_AF_INET6 if ":" in address else _AF_INET, address)
    except OSError:
        return False
    return True


def is_instance_address(address: str) -> bool:
    """What a service instance may carry as its address: an IP literal or a host name
    (the rule of ``validate_message``, for publishers that check instance by instance)."""
    return is_ip(address) or _is_hostname(address)


def parse_cidr(text: str) -> Network:
    """A client CIDR; host bits set (``10.1.2.3/16``) are an error, not silently masked."""
    return ipaddress.ip_network(text, strict=True)


def _schema_reason(exc: msgspec.MsgspecError) -> str:
    # Label is the only regex-constrained type in the stream messages.
    return "label" if "matching regex" in str(exc) else "schema"


def _check_service(
    state: ServiceState, cluster: str, namespace: str, service: str, limits: LimitsConfig
) -> None:
    """``cluster``, ``namespace``, ``service``: what the subject names."""
    if state.namespace != namespace or state.service != service:
        raise Rejected(
            "key-mismatch",
            cluster,
            f"subject names {namespace}/{service}, payload {state.namespace}/{state.service}",
        )
    instances = state.instances
    count = len(instances)
    if count > limits.max_instances_per_service:
        raise Rejected(
            "too-many-instances",
            cluster,
            f"{count} instances > {limits.max_instances_per_service}",
        )
    # One pass for both checks (this loop runs for every instance of every message);
    # a duplicate id is reported before any bad address, as it always was.
    inet_pton = socket.inet_pton
    ids: set[str] = set()
    add = ids.add
    bad_address = None
    for instance in instances:
        add(instance.id)
        if bad_address is None:
            address = instance.address
            try:
                inet_pton(_AF_INET6 if ":" in address else _AF_INET, address)
            except OSError:
                if not _is_hostname(address):
                    bad_address = instance
    if len(ids) != count:
        seen: set[str] = set()
        for instance in instances:
            if instance.id in seen:
                raise Rejected("duplicate-instance", cluster, f"instance id {instance.id!r} twice")
            seen.add(instance.id)
    if bad_address is not None:
        raise Rejected(
            "address",
            cluster,
            f"instance {bad_address.id!r}: bad address {bad_address.address!r}",
        )


def _check_beat(beat: ClusterBeat, cluster: str, limits: LimitsConfig) -> None:
    if len(beat.gateways) > limits.max_gateways_per_cluster:
        raise Rejected(
            "too-many-gateways",
            cluster,
            f"{len(beat.gateways)} gateways > {limits.max_gateways_per_cluster}",
        )
    if len(beat.client_cidrs) > limits.max_client_cidrs:
        raise Rejected(
            "too-many-cidrs",
            cluster,
            f"{len(beat.client_cidrs)} CIDRs > {limits.max_client_cidrs}",
        )
    for gateway in beat.gateways:
        # Gateways become A/AAAA records, so only IP literals will do.
        if not is_ip(gateway.address):
            raise Rejected("address", cluster, f"gateway address {gateway.address!r} is not an IP")
    for cidr in beat.client_cidrs:
        try:
            parse_cidr(cidr)
        except ValueError as exc:
            raise Rejected("cidr", cluster, f"client CIDR {cidr!r}: {exc}") from None


def validate_message(subject: str, data: bytes, limits: LimitsConfig) -> StreamMessage:
    """Decode and check one stream message; raises ``Rejected``."""
    # A service subject is recognised here without parse_subject (its SubjectKey costs
    # as much as the checks below): nearly every message is one.
    parts = subject.split(".")
    service = len(parts) == 6 and parts[2] == "svc" and parts[0] == "syncmesh" and parts[1] == "v2"
    if service:
        kind, cluster = "svc", parts[3]
    else:
        key = subjects.parse_subject(subject)
        kind, cluster = ("", "") if key is None else (key.kind, key.cluster)
    if len(data) > limits.max_message_bytes:
        raise Rejected("oversize", cluster, f"{len(data)} bytes > {limits.max_message_bytes}")
    if not kind:
        raise Rejected("subject", "", f"not a syncmesh stream subject: {subject[:200]!r}")
    # Only a service subject (six parts, the test above) names a ServiceState.
    decode: Callable[[bytes], StreamMessage] = (
        decode_service_state
        if service
        else decode_cluster_beat
        if kind == "cluster"
        else decode_epoch_claim
    )
    try:
        message = decode(data)
    except msgspec.ValidationError as exc:
        raise Rejected(_schema_reason(exc), cluster, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise Rejected("schema", cluster, str(exc)) from None
    _check_header(message, cluster)
    if isinstance(message, ServiceState):  # only from a service subject
        _check_service(message, cluster, parts[4], parts[5], limits)
    elif isinstance(message, ClusterBeat):
        _check_beat(message, cluster, limits)
    return message


def _check_header(message: StreamMessage, cluster: str) -> None:
    """The schema version, and the cluster the subject names (``cluster``)."""
    if message.schema != SCHEMA_VERSION:
        raise Rejected(
            "schema-version",
            cluster,
            f"schema {message.schema}, this registry reads {SCHEMA_VERSION}",
        )
    if message.cluster != cluster:
        raise Rejected(
            "cluster-mismatch",
            cluster,
            f"subject of cluster {cluster!r} carries a message of cluster {message.cluster!r}",
        )
