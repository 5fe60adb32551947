"""edge_sync: one agent per cluster that publishes its registry's services to NATS JetStream."""

from __future__ import annotations

__all__: list[str] = []
