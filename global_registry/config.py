"""Settings of one registry replica (``registry.toml``, env prefix ``SYNCMESH_REGISTRY``)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from syncmesh.schema import Locality

__all__ = [
    "StaleConfig",
    "ProbeConfig",
    "ApiConfig",
    "IngestConfig",
    "LoadConfig",
    "ReplicaLocality",
    "AntiEntropyConfig",
]

PositiveSeconds = Annotated[float, Meta(gt=0, le=86_400)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
Count = Annotated[int, Meta(ge=1)]


class StaleConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """When an agent counts as stale, and what the registry does with its cluster then."""

    # "serve": keep answering with the last known state while the cluster's
    # gateways pass their probes (flagged in metrics and in the answers' TXT);
    # "drop": a stale cluster is no candidate at all.
    policy: Literal["serve", "drop"] = "serve"
    # TTL = after_beats x the beat interval the agent announces in its beat.
    after_beats: Annotated[float, Meta(ge=1, le=1000)] = 3.0
    # How long the view remembers a deleted service's (epoch, revision), so that
    # an older state of it stays deleted. Agents publish tombstones with a NATS
    # per-message TTL; keep this at least that long. Default one day.
    tombstone_ttl_s: Annotated[float, Meta(gt=0, le=366 * 86_400)] = 86_400.0


class ProbeConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """TCP connect probes of every gateway, from this replica."""

    # Disabled: every announced gateway counts as up and no RTT is known.
    enabled: bool = True
    interval_s: PositiveSeconds = 2.0
    timeout_s: PositiveSeconds = 1.0
    # Consecutive successes to go up, consecutive failures to go down.
    rise: Annotated[int, Meta(ge=1, le=100)] = 2
    fall: Annotated[int, Meta(ge=1, le=100)] = 3
    # Each delay is interval x (1 +/- jitter) so probes of many replicas spread out.
    jitter: Fraction = 0.1
    max_concurrent: Annotated[int, Meta(ge=1, le=10_000)] = 64
    # Weight of a new sample in the RTT moving average.
    rtt_alpha: Annotated[float, Meta(gt=0, le=1)] = 0.3
    # RTT buckets on a log scale, each (1 + ratio) times wider than the last;
    # only a bucket change (with half a bucket of hysteresis) can reorder clusters.
    rtt_bucket_ratio: Annotated[float, Meta(gt=0, le=10)] = 0.5
    # RTTs below this all fall in bucket 0 (loopback and same-rack jitter).
    rtt_floor_ms: Annotated[float, Meta(gt=0, le=10_000)] = 1.0
    # How often this replica publishes its ProbeReport for observers.
    report_interval_s: PositiveSeconds = 10.0


Percent = Annotated[int, Meta(ge=0, le=100)]


class LoadConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """What gateway loads (0-100, sent by the agents in their beats) do to answers.

    A cluster whose load rises above ``overloaded_above_pct`` is ranked after
    every cluster that is not overloaded, and stays there until its load is
    below ``recovered_below_pct``: the gap keeps answers from flapping around
    one threshold. An unknown load never counts as overloaded.
    """

    # False: loads are shown on the status page but change no answer.
    enabled: bool = True
    overloaded_above_pct: Percent = 75
    recovered_below_pct: Percent = 65
    # The load answers use (SRV weights, TXT, /v1/resolve) follows a gateway's
    # load only once it moved this many points, so a load that wobbles by a point
    # every beat does not flush every cached answer of its cluster each time.
    step_pct: Annotated[int, Meta(ge=1, le=100)] = 5

    def __post_init__(self) -> None:
        if self.recovered_below_pct > self.overloaded_above_pct:
            raise ValueError(
                f"load: recovered_below_pct ({self.recovered_below_pct}) must not exceed "
                f"overloaded_above_pct ({self.overloaded_above_pct})"
            )


class ApiConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """The NATS request/reply API (``resolve`` and ``inventory``)."""

    enabled: bool = True
    # Replicas share one queue group, so each request gets one answer.
    queue_group: str = "syncmesh-registry"
    # An inventory reply larger than this asks the caller to filter instead.
    max_reply_bytes: Count = 1_000_000


class IngestConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """How the stream is read."""

    # The fast reader (its own NATS connection, frames parsed without nats-py's
    # per-message objects); false: nats-py's ordered consumer, about 3x slower.
    fast_path: bool = True
    # Idle heartbeat of the consumer; silence for 3 of them recreates it.
    heartbeat_s: Annotated[float, Meta(ge=0.1, le=60)] = 2.0
    # Python's cyclic GC stays off while the first full read runs (it would
    # rescan the growing view over and over) and the view is frozen out of
    # later collections once caught up.
    pause_gc_while_catching_up: bool = True


class AntiEntropyConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Comparing each fresh beat's service-set digest with this replica's view of the
    cluster, and asking the agent to resync when they keep differing (docs/registry.md)."""

    enabled: bool = True
    # How long a mismatch must persist before the first resync request: a change in
    # flight or a publish being retried settles within a beat or two.
    grace_s: Annotated[float, Meta(ge=0, le=86_400)] = 6.0
    # Requests for one cluster while the mismatch persists: the first after the grace,
    # then after min_interval_s, doubling up to max_interval_s.
    min_interval_s: PositiveSeconds = 30.0
    max_interval_s: PositiveSeconds = 600.0

    def __post_init__(self) -> None:
        if self.max_interval_s < self.min_interval_s:
            raise ValueError("anti_entropy: max_interval_s must be >= min_interval_s")


class ReplicaLocality(Struct, kw_only=True, forbid_unknown_fields=True):
    """Where this replica runs: the reference for clients in no cluster's CIDRs."""

    region: str = ""
    zone: str = ""

    def to_locality(self) -> Locality:
        return Locality(region=self.region, zone=self.zone)
