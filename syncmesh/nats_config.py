"""NATS connection settings shared by the agent and the registry."""

from __future__ import annotations

import msgspec

__all__ = ["NatsConfig"]


class NatsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    name: str = ""
    user: str = ""
    password: str = ""
    token: str = ""
    # An NKey seed file, or a JWT creds file (NATS decentralised auth).
    nkeys_seed: str = ""
    creds: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # Stream replicas: 1 on a single server, 3 on a NATS cluster.
    replicas: int = 1
    connect_timeout_s: float = 2.0
