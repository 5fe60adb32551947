"""NATS subject names and the JetStream stream that holds the last state per subject.

Pure ``encode_*``/``parse_*`` functions; the only place subject strings are built.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "PREFIX",
    "STREAM",
    "STREAM_SUBJECTS",
    "SVC_WILDCARD",
    "CLUSTER_WILDCARD",
    "EPOCH_WILDCARD",
    "RESOLVE",
    "INVENTORY",
    "STATUS",
    "service_subject",
    "cluster_subject",
    "epoch_subject",
    "resync_subject",
    "probe_subject",
    "standby_subject",
    "cluster_service_wildcard",
    "SubjectKey",
    "parse_subject",
    "msg_id",
]

PREFIX = "syncmesh.v2"
# One stream keeps the last message of every service and cluster subject
# (max_msgs_per_subject=1): a consumer rebuilds the whole inventory from it.
STREAM = "SYNCMESH_V2"
SVC_WILDCARD = f"{PREFIX}.svc.>"
CLUSTER_WILDCARD = f"{PREFIX}.cluster.*"
EPOCH_WILDCARD = f"{PREFIX}.epoch.*"
STREAM_SUBJECTS = [SVC_WILDCARD, CLUSTER_WILDCARD, EPOCH_WILDCARD]
RESOLVE = f"{PREFIX}.api.resolve"
INVENTORY = f"{PREFIX}.api.inventory"
# Every replica answers (no queue group): each probes the gateways from where it runs.
STATUS = f"{PREFIX}.api.status"


def service_subject(cluster: str, namespace: str, service: str) -> str:
    return f"{PREFIX}.svc.{cluster}.{namespace}.{service}"


def cluster_subject(cluster: str) -> str:
    return f"{PREFIX}.cluster.{cluster}"


def epoch_subject(cluster: str) -> str:
    return f"{PREFIX}.epoch.{cluster}"


def cluster_service_wildcard(cluster: str) -> str:
    return f"{PREFIX}.svc.{cluster}.>"


def resync_subject(cluster: str) -> str:
    return f"{PREFIX}.resync.{cluster}"


def probe_subject(replica: str) -> str:
    return f"{PREFIX}.probe.{replica}"


def standby_subject(cluster: str) -> str:
    """Core NATS, not stored: standby agents of ``cluster`` say they are there."""
    return f"{PREFIX}.standby.{cluster}"


class SubjectKey(NamedTuple):
    """What a stream subject names: a service of a cluster, or the cluster's beat."""

    kind: str  # "svc", "cluster" or "epoch"
    cluster: str
    namespace: str = ""
    service: str = ""


def parse_subject(subject: str) -> SubjectKey | None:
    """The key a stream subject names, or None when it is not one of ours."""
    parts = subject.split(".")
    if len(parts) < 4 or parts[0] != "syncmesh" or parts[1] != "v2":
        return None
    if parts[2] == "svc" and len(parts) == 6:
        return SubjectKey("svc", parts[3], parts[4], parts[5])
    if parts[2] == "cluster" and len(parts) == 4:
        return SubjectKey("cluster", parts[3])
    if parts[2] == "epoch" and len(parts) == 4:
        return SubjectKey("epoch", parts[3])
    return None


def msg_id(cluster: str, epoch: int, revision: int) -> str:
    """JetStream de-duplication id (``Nats-Msg-Id``): one per published revision."""
    return f"{cluster}:{epoch}:{revision}"
