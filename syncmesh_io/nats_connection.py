"""NATS connection settings shared by the agent and the registry, and the
idempotent creation of the stream that holds the last state per subject."""

from __future__ import annotations

import functools
import logging
import os
import ssl
from typing import Any

from syncmesh import subjects
from syncmesh.errors import SyncmeshError
from syncmesh.nats_config import NatsConfig

log = logging.getLogger("syncmesh.nats")

__all__ = [
    "connect",
    "connect_options",
    "ensure_stream",
    "check_stream",
    "join_stream",
    "stream_problems",
    "StreamSettingsError",
]


def _read_secret(path: str) -> str:
    """A secret file's content; read at each (re)connect so a rotated file is used."""
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


class _ReloadingTls:
    """One SSLContext whose client certificate follows its files: nats-py keeps the
    context across reconnects, so a rotated certificate is loaded into it in place
    (``load_cert_chain`` replaces the chain for later handshakes)."""

    def __init__(self, cfg: NatsConfig) -> None:
        self.cfg = cfg
        self.context = ssl.create_default_context(cafile=cfg.tls_ca or None)
        self._stamp: tuple[float, float] | None = None
        self.reload()

    def reload(self) -> bool:
        if not self.cfg.tls_cert:
            return False
        key = self.cfg.tls_key or self.cfg.tls_cert
        stamp = (os.stat(self.cfg.tls_cert).st_mtime, os.stat(key).st_mtime)
        if stamp == self._stamp:
            return False
        self.context.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key or None)
        self._stamp = stamp
        return True


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
        # nats-py calls a callable password/token at every CONNECT it sends.
        opts["password"] = (
            functools.partial(_read_secret, cfg.password_file)
            if cfg.password_file
            else cfg.password
        )
    if cfg.token or cfg.token_file:
        opts["token"] = (
            functools.partial(_read_secret, cfg.token_file) if cfg.token_file else cfg.token
        )
    if cfg.nkeys_seed:
        opts["nkeys_seed"] = cfg.nkeys_seed
    if cfg.creds:
        # nats-py reads the creds file at every CONNECT: a re-issued JWT is picked up.
        opts["user_credentials"] = cfg.creds
    if cfg.tls_ca or cfg.tls_cert:
        opts["tls"] = _ReloadingTls(cfg)
    return opts


# Server errors that mean "your credentials are no longer valid": a reload that
# rotated a password or token, or a user JWT that expired.
_CREDENTIAL_ERRORS = ("authorization violation", "authentication expired", "authorization error")


def _client_class() -> Any:
    """nats-py closes a client for good on any server ``-ERR``, including the one a
    server sends when it drops a connection whose credentials were rotated or
    expired: the process would never publish again. This client reconnects
    instead, and the reconnect reads the secret files afresh. Falls back to the
    stock client (with a warning) if nats-py's internals change."""
    from nats.aio.client import Client

    if not hasattr(Client, "_process_err") or not hasattr(Client, "_process_op_err"):
        log.warning("nats-py internals changed: rotated credentials need a restart")
        return Client

    class RotatingCredentialsClient(Client):  # type: ignore[misc]
        async def _process_err(self, err_msg: str) -> None:
            if any(marker in err_msg.lower() for marker in _CREDENTIAL_ERRORS):
                from nats.errors import AuthorizationError

                log.warning(
                    "NATS refused our credentials (%s): reconnecting with the current files",
                    err_msg.strip("' "),
                )
                await self._process_op_err(AuthorizationError())
                return
            await super()._process_err(err_msg)

    return RotatingCredentialsClient


async def connect(cfg: NatsConfig, **extra: Any) -> Any:
    opts = connect_options(cfg)
    tls = opts.pop("tls", None)
    if isinstance(tls, _ReloadingTls):
        opts["tls"] = tls.context
        user_cb = extra.get("disconnected_cb")

        async def disconnected() -> None:
            # Before nats-py reconnects: a rotated client certificate goes in now.
            try:
                tls.reload()
            except (OSError, ssl.SSLError) as exc:
                log.warning("client certificate not reloaded: %s", exc)
            if user_cb is not None:
                await user_cb()

        extra["disconnected_cb"] = disconnected
    opts.update(extra)
    client = _client_class()()
    await client.connect(**opts)
    return client


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
    # A stream from before per-message TTLs still works (tombstones then do not
    # expire); the owner upgrades it, and the agent publishes tombstones without TTL.
    problems = [p for p in stream_problems(info.config) if not p.startswith("allow_msg_ttl")]
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
