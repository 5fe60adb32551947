"""The agent's Prometheus metrics, on a registry the caller owns (never the global one)."""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["EdgeMetrics", "PublishedKind", "ResyncOutcome"]


class PublishedKind(enum.StrEnum):
    """``syncmesh_edge_published_total{kind}``."""

    SERVICE = "service"
    TOMBSTONE = "tombstone"
    BEAT = "beat"


class ResyncOutcome(enum.StrEnum):
    """``syncmesh_edge_resync_requests_total{outcome}``."""

    DONE = "done"  # everything republished now
    DEFERRED = "deferred"  # over the rate limit: done once a token is back, never dropped
    INVALID = "invalid"  # malformed or oversized: ignored


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.published = Counter(
            "syncmesh_edge_published",
            "Messages acknowledged by JetStream, by kind (service, tombstone, beat).",
            ["kind"],
            registry=registry,
        )
        self.publish_errors = Counter(
            "syncmesh_edge_publish_errors",
            "Publishes that failed, by reason.",
            ["reason"],
            registry=registry,
        )
        self.source_errors = Counter(
            "syncmesh_edge_source_errors",
            "Errors talking to or reading the source, by reason.",
            ["reason"],
            registry=registry,
        )
        self.invalid_input = Counter(
            "syncmesh_edge_invalid_input",
            "Input rejected (bad service file, instance the schema cannot carry, "
            "malformed resync request or stream message), by reason.",
            ["reason"],
            registry=registry,
        )
        self.unpublishable = Counter(
            "syncmesh_edge_unpublishable",
            "Service states and beats not published because the registry would reject them "
            "(syncmesh.validate), by reason.",
            ["reason"],
            registry=registry,
        )
        self.last_sync = Gauge(
            "syncmesh_edge_last_successful_sync_timestamp_seconds",
            "Unix time of the last successful read of the source.",
            registry=registry,
        )
        self.services = Gauge(
            "syncmesh_edge_services",
            "Services seen in the source (after filters).",
            registry=registry,
        )
        self.instances = Gauge(
            "syncmesh_edge_instances",
            "Instances of the services seen in the source.",
            registry=registry,
        )
        self.label_collisions = Gauge(
            "syncmesh_edge_label_collisions",
            "Source names not published because another name holds their DNS label.",
            registry=registry,
        )
        self.label_collision_events = Counter(
            "syncmesh_edge_label_collision_events",
            "Times a source name lost its DNS label to another name.",
            registry=registry,
        )
        self.pending = Gauge(
            "syncmesh_edge_pending_publishes",
            "Services whose latest state NATS has not acknowledged yet.",
            registry=registry,
        )
        self.nats_connected = Gauge(
            "syncmesh_edge_nats_connected", "1 while connected to NATS.", registry=registry
        )
        self.source_ok = Gauge(
            "syncmesh_edge_source_ok",
            "1 while the source answers, 0 when degraded.",
            registry=registry,
        )
        self.source_requests = Counter(
            "syncmesh_edge_source_requests",
            "Requests sent to the source, by kind.",
            ["kind"],
            registry=registry,
        )
        self.source_events = Counter(
            "syncmesh_edge_source_events",
            "Source events by kind: consul_index_reset, consul_relist_unexplained, "
            "consul_relist_full, consul_bulk_read, consul_bulk_fallback.",
            ["kind"],
            registry=registry,
        )
        self.resync_requests = Counter(
            "syncmesh_edge_resync_requests",
            "Resync requests received, by outcome (done, deferred, invalid).",
            ["outcome"],
            registry=registry,
        )
        self.epoch = Gauge(
            "syncmesh_edge_epoch",
            "This agent's epoch: the stream sequence of its claim (0 before the claim).",
            registry=registry,
        )
        self.claims = Counter(
            "syncmesh_edge_epoch_claims",
            "Epoch claims this agent made (1 per run; more only if the stream lost its claim).",
            registry=registry,
        )
        self.fence_busy = Counter(
            "syncmesh_edge_fence_busy",
            "Publishes sent again because the clustered stream was checking another fenced "
            "message (nats-server 10164); high values mean publishing is serialised.",
            registry=registry,
        )
        self.deposed = Counter(
            "syncmesh_edge_deposed",
            "Times this agent found another agent's newer claim and stopped publishing.",
            registry=registry,
        )
        self.leader = Gauge(
            "syncmesh_edge_leader",
            "1 while this agent holds its cluster's claim and publishes; 0 standing by.",
            registry=registry,
        )
        self.standbys = Gauge(
            "syncmesh_edge_standbys",
            "Standby agents of this cluster the leader heard from recently (0 on a standby).",
            registry=registry,
        )
        self.takeovers = Counter(
            "syncmesh_edge_takeovers",
            "Claims this agent made as a standby after the leader's lease ran out.",
            registry=registry,
        )
        self.stepdowns = Counter(
            "syncmesh_edge_stepdowns",
            "Times this agent was deposed while leading and stepped down to standby (ha.standby).",
            registry=registry,
        )
        self.task_crashes = Counter(
            "syncmesh_edge_task_crashes",
            "Unexpected errors that ended an agent task (source or nats); it was restarted.",
            ["task"],
            registry=registry,
        )
        self.start_tombstones = Counter(
            "syncmesh_edge_start_tombstones",
            "Tombstones queued at start-up for services NATS held but the source no longer has.",
            registry=registry,
        )
