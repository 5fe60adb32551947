"""Which NATS the operator commands talk to: ``--nats``, ``--config`` or ``SYNCMESH_NATS_URL``.

Precedence: ``--nats URL[,URL...]`` names the servers; ``--config FILE`` (an
edge or a registry TOML) gives its whole ``[nats]`` table, credentials and TLS
included, with that file's environment overrides (``SYNCMESH_EDGE__NATS__*`` or
``SYNCMESH_REGISTRY__NATS__*``); ``SYNCMESH_NATS_URL`` is used when neither
names servers; else ``nats://127.0.0.1:4222``. ``--nats`` with ``--config``
keeps the file's credentials and replaces only its servers.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from syncmesh.configfile import ConfigError, apply_env_overrides
from syncmesh.nats_config import NatsConfig

__all__ = ["ENV_URL", "config_kind", "nats_settings"]

ENV_URL = "SYNCMESH_NATS_URL"


def config_kind(data: Mapping[str, Any]) -> str | None:
    """``"edge"`` (has ``cluster``), ``"registry"`` (has ``replica``) or None."""
    if "cluster" in data:
        return "edge"
    if "replica" in data:
        return "registry"
    return None


def _split(urls: str) -> list[str]:
    return [u.strip() for u in urls.split(",") if u.strip()]


def nats_settings(
    url: str | None, config: str | None, environ: Mapping[str, str] | None = None
) -> NatsConfig:
    env = os.environ if environ is None else environ
    settings = NatsConfig()
    from_file = False
    if config is not None:
        try:
            data = tomllib.loads(Path(config).read_text())
        except OSError as exc:
            raise ConfigError(f"{config}: cannot read: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config}: not valid TOML: {exc}") from exc
        kind = config_kind(data)
        if kind is not None:
            prefix = "SYNCMESH_EDGE" if kind == "edge" else "SYNCMESH_REGISTRY"
            data = apply_env_overrides(data, prefix, env)
        table = data.get("nats", {})
        try:
            settings = msgspec.convert(table, NatsConfig, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{config}: invalid config: {exc} (in [nats])") from exc
        from_file = "servers" in table
    servers: list[str] = []
    if url:
        servers = _split(url)
    elif not from_file and env.get(ENV_URL):
        servers = _split(env[ENV_URL])
    if servers:
        settings = msgspec.structs.replace(settings, servers=servers)
    if not settings.servers:
        raise ConfigError("no NATS server: give --nats URL, --config FILE or SYNCMESH_NATS_URL")
    return settings
