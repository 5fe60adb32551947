"""Bounds on what an agent may publish; the agent checks them before it publishes and
the registry when it receives, so both sides agree on what is valid."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

__all__ = ["LimitsConfig"]

Count = Annotated[int, Meta(ge=1)]


class LimitsConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Bounds on what an agent may publish; a message beyond them is rejected."""

    max_message_bytes: Count = 1_048_576
    max_instances_per_service: Count = 10_000
    max_services_per_cluster: Count = 200_000
    max_gateways_per_cluster: Count = 64
    max_client_cidrs: Count = 4096
    max_clusters: Count = 4096
