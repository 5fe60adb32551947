"""NATS connection settings shared by the agent and the registry."""

from __future__ import annotations

import msgspec

__all__ = ["NatsConfig"]


class NatsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How to reach NATS. Every secret can come from a file (``*_file``, or the
    paths of ``nkeys_seed``, ``creds`` and ``tls_*``): files are read again on
    every (re)connect, so a rotated password, token, creds file (a JWT that
    expires) or client certificate is used without a restart."""

    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    name: str = ""
    user: str = ""
    password: str = ""
    password_file: str = ""
    token: str = ""
    token_file: str = ""
    # An NKey seed file, or a JWT creds file (NATS decentralised auth).
    nkeys_seed: str = ""
    creds: str = ""
    tls_ca: str = ""
    # A client certificate and key: mutual TLS with a server that verifies clients.
    tls_cert: str = ""
    tls_key: str = ""
    # Stream replicas: 1 on a single server, 3 on a NATS cluster.
    replicas: int = 1
    connect_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if self.password and self.password_file:
            raise ValueError("nats: set password or password_file, not both")
        if self.token and self.token_file:
            raise ValueError("nats: set token or token_file, not both")
