"""NATS connection settings shared by the agent and the registry, and the
idempotent creation of the stream that holds the last state per subject."""

from __future__ import annotations

import ssl
from typing import Any

from syncmesh import subjects
from syncmesh.nats_config import NatsConfig

__all__ = ["connect", "connect_options", "ensure_stream"]


def _tls(cfg: NatsConfig) -> ssl.SSLContext | None:
    if not (cfg.tls_ca or cfg.tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
    if cfg.tls_cert:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    return ctx


def connect_options(cfg: NatsConfig) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``: reconnect forever, never give up."""
    opts: dict[str, Any] = {
        "servers": cfg.servers,
        "connect_timeout": cfg.connect_timeout_s,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
    }
    if cfg.name:
        opts["name"] = cfg.name
    if cfg.user:
        opts["user"] = cfg.user
        opts["password"] = cfg.password
    if cfg.token:
        opts["token"] = cfg.token
    if cfg.nkeys_seed:
        opts["nkeys_seed"] = cfg.nkeys_seed
    if cfg.creds:
        opts["user_credentials"] = cfg.creds
    tls = _tls(cfg)
    if tls is not None:
        opts["tls"] = tls
    return opts


async def connect(cfg: NatsConfig, **extra: Any) -> Any:
    import nats

    opts = connect_options(cfg)
    opts.update(extra)
    return await nats.connect(**opts)


async def ensure_stream(js: Any, replicas: int = 1) -> None:
    """Create or update the state stream; safe to call from every process."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    config = StreamConfig(
        name=subjects.STREAM,
        subjects=subjects.STREAM_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=120.0,
        allow_direct=True,
        # Tombstones carry a Nats-TTL header so deleted services do not stay in the
        # stream forever (nats-server >= 2.11; an existing stream is updated to allow it).
        allow_msg_ttl=True,
    )
    try:
        await js.add_stream(config)
    except Exception as exc:  # noqa: BLE001 - nats-py raises BadRequestError on mismatch
        if "already in use" not in str(exc) and "exists" not in str(exc):
            raise
        await js.update_stream(config)
