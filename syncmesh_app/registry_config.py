"""The registry process's config file: the registry's own settings, DNS and NATS."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from dns_server.config import DnsConfig
from global_registry.config import (
    AntiEntropyConfig,
    ApiConfig,
    IngestConfig,
    LoadConfig,
    ProbeConfig,
    ReplicaLocality,
    StaleConfig,
)
from syncmesh.limits import LimitsConfig
from syncmesh.nats_config import NatsConfig
from syncmesh.schema import Label
from syncmesh_io.gc_pauses import GcConfig

__all__ = ["RegistryConfig"]


class RegistryConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    dns: DnsConfig = msgspec.field(default_factory=DnsConfig)
    # This replica's name: one subject token (probe reports go to syncmesh.v2.probe.<replica>).
    replica: Label = "registry"
    locality: ReplicaLocality = msgspec.field(default_factory=ReplicaLocality)
    admin_address: str = "127.0.0.1"
    # 0 picks a free port (tests); the bound port is RegistryApp.admin_port.
    admin_port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    stale: StaleConfig = msgspec.field(default_factory=StaleConfig)
    probe: ProbeConfig = msgspec.field(default_factory=ProbeConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    # Gateway loads from the beats: overloaded clusters demoted, SRV weights by headroom.
    load: LoadConfig = msgspec.field(default_factory=LoadConfig)
    anti_entropy: AntiEntropyConfig = msgspec.field(default_factory=AntiEntropyConfig)
    # The garbage collector's pauses kept short (syncmesh_io/gc_pauses.py).
    gc: GcConfig = msgspec.field(default_factory=GcConfig)
