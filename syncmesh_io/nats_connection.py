"""NATS connection settings shared by the agent and the registry, and the
idempotent creation of the stream that holds the last state per subject."""

from __future__ import annotations

import ssl
from typing import Any

from syncmesh import subjects
from syncmesh.errors import SyncmeshError
from syncmesh.nats_config import NatsConfig

__all__ = [
    "connect",
    "connect_options",
    "ensure_stream",
    "check_stream",
    "join_stream",
    "stream_problems",
    "StreamSettingsError",
]


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


class StreamSettingsError(SyncmeshError):
    """The stream on the server disagrees with this process; ``detail`` names the setting."""


def _desired(replicas: int) -> Any:
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

    return StreamConfig(
        name=subjects.STREAM,
        subjects=list(subjects.STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=120.0,
        allow_direct=True,
        # Tombstones carry a Nats-TTL header and leave the stream by themselves.
        allow_msg_ttl=True,
    )


def stream_problems(current: Any) -> list[str]:
    """What in an existing stream config breaks the contract every process relies on."""
    problems = []
    if current.max_msgs_per_subject != 1:
        problems.append(f"max_msgs_per_subject is {current.max_msgs_per_subject}, must be 1")
    missing = sorted(set(subjects.STREAM_SUBJECTS) - set(current.subjects or []))
    if missing:
        problems.append(f"subjects lack {', '.join(missing)}")
    if not current.allow_msg_ttl:
        problems.append("allow_msg_ttl is off (tombstones would never expire)")
    for limit in ("max_age", "max_msgs", "max_bytes"):
        value = getattr(current, limit, None)
        if value not in (None, 0, -1):
            problems.append(f"{limit} is {value}: a limit would silently drop live states")
    return problems


async def ensure_stream(js: Any, replicas: int = 1) -> None:
    """The stream owner (a registry): create the stream, or raise its replicas.

    Never lowers anything: one process left on a default (``replicas = 1``)
    must not turn an R3 stream into R1. A stream with fewer replicas than asked
    for is raised; one with more, or with settings that break the contract, is
    a ``StreamSettingsError`` naming the setting.
    """
    from nats.js.errors import NotFoundError

    desired = _desired(replicas)
    try:
        info = await js.stream_info(subjects.STREAM)
    except NotFoundError:
        try:
            await js.add_stream(desired)
            return
        except Exception as exc:  # noqa: BLE001 - another process created it first
            if "already in use" not in str(exc) and "exists" not in str(exc):
                raise
        info = await js.stream_info(subjects.STREAM)
    current = info.config
    have = current.num_replicas or 1
    if have > replicas:
        raise StreamSettingsError(
            "stream-replicas",
            f"stream {subjects.STREAM} has {have} replicas, this process asks for {replicas} "
            f"(nats.replicas): refusing to lower it; set nats.replicas = {have}",
        )
    problems = stream_problems(current)
    fixable = [p for p in problems if p.startswith(("subjects", "allow_msg_ttl"))]
    if problems and len(fixable) != len(problems):
        raise StreamSettingsError(
            "stream-settings", f"stream {subjects.STREAM}: {'; '.join(problems)}"
        )
    if have < replicas or fixable:
        # Raising replicas and adding what a newer version needs never loses data.
        await js.update_stream(desired)


async def check_stream(js: Any) -> None:
    """Everyone but the owner: the stream exists and keeps the contract; changes nothing."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(subjects.STREAM)
    except NotFoundError as exc:
        raise StreamSettingsError(
            "stream-missing", f"stream {subjects.STREAM} does not exist yet (a registry creates it)"
        ) from exc
    problems = stream_problems(info.config)
    if problems:
        raise StreamSettingsError(
            "stream-settings", f"stream {subjects.STREAM}: {'; '.join(problems)}"
        )


async def join_stream(js: Any, replicas: int = 1) -> None:
    """An agent: check the existing stream; create it only when it is missing and this
    user may (a fresh NATS with no registry yet). Never updates an existing stream."""
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(subjects.STREAM)
    except NotFoundError:
        try:
            await js.add_stream(_desired(replicas))
        except Exception as exc:  # noqa: BLE001 - denied by permissions, or created meanwhile
            if "already in use" not in str(exc) and "exists" not in str(exc):
                raise StreamSettingsError(
                    "stream-missing",
                    f"stream {subjects.STREAM} does not exist and cannot be created here: {exc}",
                ) from exc
    await check_stream(js)
