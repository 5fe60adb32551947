"""The wire contract: the one source of every message syncmesh puts on NATS.

Both sides (edge_sync publishes, global_registry and inventory tools consume)
import these Structs; `syncmesh_app.schemagen` turns them into the JSON Schema files
under ``schemas/`` for consumers in other languages. A change to any Struct here
that is not backwards compatible bumps ``SCHEMA_VERSION`` and the ``v1`` in the
subjects.

Ordering never trusts a clock. Every message of one agent carries ``(epoch,
revision)``. ``epoch`` is a fencing token taken from NATS: the stream sequence at
which the agent's ``EpochClaim`` was stored on ``syncmesh.v2.epoch.<cluster>``
(a compare-and-set publish), so it only grows and no clock, restored VM or
stray message can forge a larger valid one. ``revision`` grows by one for every
message that agent publishes. A consumer keeps, per key, the message with the
largest ``(epoch, revision)``; the acceptance rules that fence a deposed agent
and reject forged epochs are in ``syncmesh.epochs`` (docs/registry.md).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, NoReturn

import msgspec
from msgspec import Meta, Struct

__all__ = [
    "SCHEMA_VERSION",
    "Health",
    "Label",
    "LABEL_PATTERN",
    "Instance",
    "ServiceState",
    "Gateway",
    "Locality",
    "ClusterBeat",
    "GatewayProbeReport",
    "ProbeReport",
    "RankedCluster",
    "ResolveRequest",
    "ResolveReply",
    "InventoryRequest",
    "InventoryService",
    "InventoryCluster",
    "Inventory",
    "StatusRequest",
    "StatusGateway",
    "StatusCluster",
    "StatusReply",
    "ResyncRequest",
    "StandbyPresence",
    "EpochClaim",
    "encode",
    "decode_service_state",
    "decode_cluster_beat",
    "decode_epoch_claim",
    "WIRE_TYPES",
]

# 2: epochs are NATS claim sequences (was: boot time in ms); subjects syncmesh.v2.
SCHEMA_VERSION = 2

# A DNS label as syncmesh uses it: lower case letters, digits and inner dashes.
LABEL_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
Label = Annotated[str, Meta(min_length=1, max_length=63, pattern=LABEL_PATTERN)]
# The same in the JSON Schema, but msgspec leaves the pattern to ``decode_service_state``:
# it enforces a ``pattern`` by calling Python's ``re`` for every value, and the three
# labels of a ServiceState were 30-60 % of decoding it (see ``_ServiceStateChecked``).
_LabelInSchema = Annotated[
    str, Meta(min_length=1, max_length=63, extra_json_schema={"pattern": LABEL_PATTERN})
]
Port = Annotated[int, Meta(ge=1, le=65535)]
Weight = Annotated[int, Meta(ge=0, le=65535)]
NonNegative = Annotated[int, Meta(ge=0)]

# Consul's three check states; Nacos maps healthy -> passing, unhealthy or
# disabled -> critical. "warning" still receives traffic (as in Consul DNS).
Health = Literal["passing", "warning", "critical"]


class Instance(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One instance of a service; ``id`` is its explicit identity in the cluster."""

    id: Annotated[str, Meta(min_length=1, max_length=256)]
    address: Annotated[str, Meta(min_length=1, max_length=64)]
    port: Port
    health: Health = "passing"
    weight: Weight = 100
    zone: str | None = None
    meta: dict[str, str] = {}
    # The release this instance runs (Consul meta/tag ``version``, Nacos metadata
    # ``version``, the service file); DNS subsets ``<version>.<service>...`` match it.
    version: Annotated[str, Meta(max_length=63)] = ""
    # Source tags (Consul tags, Nacos metadata ``tags``); DNS tag subsets match them.
    tags: Annotated[list[Annotated[str, Meta(max_length=63)]], Meta(max_length=64)] = []


class ServiceState(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The full state of one service in one cluster, or its tombstone.

    Subject: ``syncmesh.v2.svc.<cluster>.<namespace>.<service>``.
    """

    schema: int
    # Labels: decode with ``decode_service_state``, which checks them.
    cluster: _LabelInSchema
    namespace: _LabelInSchema
    service: _LabelInSchema
    epoch: NonNegative
    revision: NonNegative
    source: Literal["consul", "nacos", "file"]
    # The name as the source spells it (Nacos ``com.foo.Bar``); ``service`` is its label.
    source_name: Annotated[str, Meta(min_length=1, max_length=512)]
    instances: list[Instance] = []
    deleted: bool = False


class Gateway(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A cluster's ingress for cross-cluster calls; probed over TCP by every replica."""

    address: Annotated[str, Meta(min_length=1, max_length=64)]
    port: Port
    weight: Weight = 100
    # Current load in percent as the agent last learned it; None = unknown (never 0).
    load: Annotated[int, Meta(ge=0, le=100)] | None = None


class Locality(Struct, frozen=True, kw_only=True, omit_defaults=True):
    region: str = ""
    zone: str = ""


class ClusterBeat(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Liveness and topology of one cluster's agent. Subject: ``syncmesh.v2.cluster.<cluster>``.

    ``retired`` marks a decommissioned cluster (``syncmesh retire-cluster``):
    consumers forget it and every service of it.
    """

    schema: int
    cluster: Label
    epoch: NonNegative
    revision: NonNegative
    # Seconds between beats; a consumer calls the agent stale after a few missed ones.
    interval_s: Annotated[float, Meta(gt=0, le=3600)]
    gateways: list[Gateway] = []
    locality: Locality = Locality()
    client_cidrs: list[str] = []
    agent_version: str = ""
    source_kind: Literal["consul", "nacos", "file"] = "file"
    source_health: Literal["ok", "degraded"] = "ok"
    source_error: str = ""
    # Count and digest (``syncmesh.digest``) of the live services the stream holds for
    # this cluster as the agent knows it, each with the (epoch, revision) of its message,
    # so a consumer can tell that it missed something (anti-entropy, docs/digest.md).
    services: NonNegative = 0
    digest: str = ""
    # Wall-clock send time (Unix seconds), for operators; ordering never uses it.
    sent_at: float = 0.0
    retired: bool = False
    # Which agent publishes (host:pid of the epoch's claimant) and how many standby
    # agents of this cluster it knows are waiting to take over.
    leader: str = ""
    standbys: NonNegative = 0


class EpochClaim(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An agent taking over its cluster. Subject: ``syncmesh.v2.epoch.<cluster>``.

    Published with ``Nats-Expected-Last-Subject-Sequence`` set to the sequence of
    the claim it replaces (0 for the first), so two agents cannot both win; the
    stream sequence the server stores it at is the agent's epoch.
    """

    schema: int
    cluster: Label
    # Who claims: host/process id, for operators (``syncmesh status``).
    agent: str = ""
    # The epoch this claim supersedes (0 for the first claim).
    previous: NonNegative = 0
    sent_at: float = 0.0


class ResyncRequest(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Sent to ``syncmesh.v2.resync.<cluster>``: the agent republishes everything."""

    schema: int
    reason: str = ""


class StandbyPresence(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A standby agent of a cluster, ready to take over. Subject:
    ``syncmesh.v2.standby.<cluster>`` (core NATS, not stored); sent every beat
    interval, counted by the leader into ``ClusterBeat.standbys``."""

    schema: int
    cluster: Label
    # host:pid, as in EpochClaim.agent.
    agent: Annotated[str, Meta(min_length=1, max_length=256)]
    # Seconds until the next presence: the leader forgets a standby after a few missed ones.
    interval_s: Annotated[float, Meta(gt=0, le=3600)]
    # The standby read its source completely once: a takeover publishes at once.
    source_synced: bool = False
    source_health: Literal["ok", "degraded"] = "ok"
    sent_at: float = 0.0


class GatewayProbeReport(Struct, frozen=True, kw_only=True, omit_defaults=True):
    cluster: str
    address: str
    port: int
    state: str
    up: bool
    rtt_ms: float | None = None


class ProbeReport(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One replica's view of every gateway. Subject: ``syncmesh.v2.probe.<replica>``."""

    schema: int
    replica: str
    sent_at: float
    gateways: list[GatewayProbeReport] = []


class RankedCluster(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One candidate cluster in nearness order, with why it is where it is."""

    cluster: str
    rank: int
    reason: str
    gateways: list[Gateway] = []
    healthy_instances: int = 0
    rtt_ms: float | None = None
    stale: bool = False
    # The cluster's load in percent as ranking used it (its up gateways' loads,
    # weighted by gateway weight); None = unknown. ``reason`` is ``overloaded``
    # for a cluster demoted for it.
    load: Annotated[int, Meta(ge=0, le=100)] | None = None


class ResolveRequest(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Request on ``syncmesh.v2.api.resolve``."""

    namespace: str = "default"
    service: str
    client: str | None = None
    cluster: str | None = None
    # Subsets: only instances of this version / carrying every one of these tags count.
    version: str | None = None
    tags: list[str] = []


class ResolveReply(Struct, frozen=True, kw_only=True, omit_defaults=True):
    namespace: str
    service: str
    known: bool
    clusters: list[RankedCluster] = []
    error: str = ""


class InventoryRequest(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Request on ``syncmesh.v2.api.inventory``; empty filters mean everything."""

    cluster: str | None = None
    namespace: str | None = None


class InventoryService(Struct, frozen=True, kw_only=True, omit_defaults=True):
    cluster: str
    namespace: str
    service: str
    source_name: str
    instances: list[Instance] = []
    epoch: int = 0
    revision: int = 0


class InventoryCluster(Struct, frozen=True, kw_only=True, omit_defaults=True):
    cluster: str
    stale: bool
    beat: ClusterBeat | None = None


class Inventory(Struct, frozen=True, kw_only=True, omit_defaults=True):
    clusters: list[InventoryCluster] = []
    services: list[InventoryService] = []
    error: str = ""


class StatusRequest(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Request on ``syncmesh.v2.api.status``; every replica answers with its own view."""

    # Only this cluster (empty: every cluster).
    cluster: str | None = None


class StatusGateway(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One gateway as the answering replica probes it."""

    address: str
    port: int
    weight: int = 100
    # Probe state machine: unknown, up, failing, down, rising ("unprobed" with probes off).
    state: str
    up: bool
    rtt_ms: float | None = None


class StatusCluster(Struct, frozen=True, kw_only=True, omit_defaults=True):
    cluster: str
    stale: bool
    # Stale but still served (stale policy "serve" and a gateway up).
    served_stale: bool = False
    # Seconds since the agent sent its last beat; None before the first beat.
    beat_age_s: float | None = None
    ttl_s: float | None = None
    region: str = ""
    zone: str = ""
    client_cidrs: list[str] = []
    source_kind: str = ""
    source_health: str = ""
    source_error: str = ""
    agent_version: str = ""
    services: int = 0
    gateways: list[StatusGateway] = []
    # The agent that publishes (its beat's ``leader``) and the standbys it counts.
    leader: str = ""
    standbys: int = 0
    # Anti-entropy: whether the last beat's service-set digest equals this replica's
    # own (None: not compared, e.g. no digest or stale), and resync requests sent.
    in_sync: bool | None = None
    resync_requests: int = 0


class StatusReply(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One replica's operator status (``syncmesh status``, the admin ``/status`` page)."""

    replica: str
    ready: bool
    # Why not ready, or "ready".
    readiness: str = ""
    stale_policy: str = ""
    clusters: list[StatusCluster] = []
    # Client networks claimed by more than one cluster.
    cidr_conflicts: list[list[str]] = []
    error: str = ""


WIRE_TYPES: dict[str, type[Struct]] = {
    "ServiceState": ServiceState,
    "ClusterBeat": ClusterBeat,
    "ResyncRequest": ResyncRequest,
    "StandbyPresence": StandbyPresence,
    "EpochClaim": EpochClaim,
    "ProbeReport": ProbeReport,
    "ResolveRequest": ResolveRequest,
    "ResolveReply": ResolveReply,
    "InventoryRequest": InventoryRequest,
    "Inventory": Inventory,
    "StatusRequest": StatusRequest,
    "StatusReply": StatusReply,
}

_encoder = msgspec.json.Encoder()

# ``decode_service_state``: msgspec decodes a ServiceState checking every constraint but
# the labels' pattern; a label is then matched once per distinct string
# (``_LABELS_SEEN``). A state that fails either way is decoded again by the decoder of
# ``_ServiceStateChecked`` (the same Struct with the pattern on its labels), whose error
# is the one raised: accepted and rejected messages, and the reason and text of each
# rejection, are exactly those of a full msgspec decode, field order included. Valid
# states come out as ServiceState itself, with no copy (rebuilding one from a private
# Struct cost a tenth of the decode).
_service_decoder = msgspec.json.Decoder(ServiceState)
_label_search = re.compile(LABEL_PATTERN).search
_LABELS_SEEN: set[str] = set()
# Distinct labels remembered (about 80 bytes each); the set starts over when full.
_LABELS_SEEN_MAX = 65_536


class _ServiceStateChecked(ServiceState, frozen=True, kw_only=True, omit_defaults=True):
    cluster: Label
    namespace: Label
    service: Label


_checked_decoder = msgspec.json.Decoder(_ServiceStateChecked)


def _labels_pass(*labels: str) -> bool:
    seen = _LABELS_SEEN
    for label in labels:
        if label in seen:
            continue
        # msgspec's own test of a pattern: ``search`` (so ``$`` also matches before "\n").
        if _label_search(label) is None:
            return False
        if len(seen) >= _LABELS_SEEN_MAX:
            seen.clear()
        seen.add(label)
    return True


def _checked(data: bytes) -> NoReturn:
    """Raise the full decoder's error for a state that failed the fast decode: every
    constraint of the fast one is also the full one's, so the full one fails too."""
    _checked_decoder.decode(data)
    raise AssertionError("the full decoder accepted a state the fast decode refused")


_beat_decoder = msgspec.json.Decoder(ClusterBeat)
_claim_decoder = msgspec.json.Decoder(EpochClaim)


def encode(message: Struct) -> bytes:
    return _encoder.encode(message)


def decode_service_state(data: bytes) -> ServiceState:
    """Decode and validate; raises ``msgspec.ValidationError``/``DecodeError``."""
    try:
        state = _service_decoder.decode(data)
    except msgspec.MsgspecError:
        _checked(data)
    seen = _LABELS_SEEN
    if (
        state.cluster in seen and state.namespace in seen and state.service in seen
    ) or _labels_pass(state.cluster, state.namespace, state.service):
        return state
    _checked(data)


def decode_cluster_beat(data: bytes) -> ClusterBeat:
    return _beat_decoder.decode(data)


def decode_epoch_claim(data: bytes) -> EpochClaim:
    return _claim_decoder.decode(data)
