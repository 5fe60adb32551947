"""The service file: its format, its validation, and when to re-read it.

Format (TOML; YAML has the same shape)::

    [[services]]
    name = "orders"            # any string; mapped to a DNS label
    namespace = "default"      # a DNS label, default "default"
    [[services.instances]]
    address = "10.0.0.5"
    port = 8080
    id = "orders-1"            # default "<address>:<port>"
    health = "passing"         # passing | warning | critical
    weight = 100
    zone = "eu-1a"
    version = "2.1.0"          # DNS: 2-1-0.version.orders.default.svc.<zone>
    tags = ["canary", "eu"]    # DNS: canary.tag.orders.default.svc.<zone>
    meta = { team = "pay" }
"""

from __future__ import annotations

import hashlib
import tomllib
from typing import Annotated, Any, NamedTuple

import msgspec
import yaml
from msgspec import Meta, Struct

from edge_sync.core.model import DEFAULT_NAMESPACE, SourceService, map_instances
from syncmesh.labels import is_label
from syncmesh.schema import Health

__all__ = ["ServiceFileError", "parse_service_file", "FileStamp", "FileWatch", "MAX_FILE_BYTES"]

# A service file is written by people; anything larger is a mistake, not a catalog.
MAX_FILE_BYTES = 16 * 1024 * 1024


class ServiceFileError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _FileInstance(Struct, kw_only=True, forbid_unknown_fields=True):
    address: str
    port: int
    id: str = ""
    health: Health = "passing"
    weight: int = 100
    zone: str | None = None
    meta: dict[str, str] = {}
    version: str = ""
    tags: list[str] = []


class _FileService(Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=512)]
    namespace: str = DEFAULT_NAMESPACE
    instances: list[_FileInstance] = []


class _ServiceFile(Struct, kw_only=True, forbid_unknown_fields=True):
    services: list[_FileService] = []


def _load(data: bytes, fmt: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServiceFileError("encoding", f"not UTF-8: {exc}") from None
    if fmt == "yaml":
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ServiceFileError("syntax", f"not valid YAML: {exc}") from None
        return {} if loaded is None else loaded
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ServiceFileError("syntax", f"not valid TOML: {exc}") from None


def parse_service_file(data: bytes, fmt: str) -> list[SourceService]:
    """Parse and validate the whole file; any error rejects all of it."""
    if len(data) > MAX_FILE_BYTES:
        raise ServiceFileError("oversized", f"{len(data)} bytes > {MAX_FILE_BYTES}")
    raw = _load(data, fmt)
    try:
        parsed = msgspec.convert(raw, _ServiceFile, strict=False)
    except msgspec.ValidationError as exc:
        raise ServiceFileError("schema", str(exc)) from None
    out: list[SourceService] = []
    seen: set[tuple[str, str]] = set()
    for i, svc in enumerate(parsed.services):
        where = f"services[{i}] ({svc.name!r})"
        if not is_label(svc.namespace):
            raise ServiceFileError(
                "namespace", f"{where}: namespace {svc.namespace!r} is not a DNS label"
            )
        if (svc.namespace, svc.name) in seen:
            raise ServiceFileError(
                "duplicate_service", f"{where}: listed twice in {svc.namespace!r}"
            )
        seen.add((svc.namespace, svc.name))
        candidates: list[dict[str, Any]] = []
        for inst in svc.instances:
            fields: dict[str, Any] = {
                "id": inst.id or f"{inst.address}:{inst.port}",
                "address": inst.address,
                "port": inst.port,
                "health": inst.health,
                "weight": inst.weight,
                "meta": inst.meta,
                "version": inst.version,
                "tags": inst.tags,
            }
            if inst.zone:
                fields["zone"] = inst.zone
            candidates.append(fields)
        instances, rejects = map_instances(where, candidates)
        if rejects:
            # The file's policy: people wrote it, so any bad entry refuses all of it
            # (the last good version stays published) rather than publishing a guess.
            bad = rejects[0]
            reason = "duplicate_instance" if bad.reason == "duplicate_instance" else "instance"
            raise ServiceFileError(reason, bad.detail)
        out.append(
            SourceService(
                namespace=svc.namespace,
                name=svc.name,
                source_name=svc.name,
                instances=instances,
            )
        )
    return out


class FileStamp(NamedTuple):
    mtime_ns: int
    size: int


class FileWatch:
    """Decides when to read the file and whether what was read is new.

    A read happens when ``stat`` changes, and also every ``rehash_interval_s``
    (editors and coarse-mtime filesystems can keep mtime and size), but content
    is only parsed again when its hash changed.
    """

    def __init__(self, rehash_interval_s: float) -> None:
        self.rehash_interval_s = rehash_interval_s
        self._stamp: FileStamp | None = None
        self._hash: bytes | None = None
        self._last_read = float("-inf")
        self._missing_reported = False

    def should_read(self, stamp: FileStamp | None, now: float) -> bool:
        if stamp is None:
            return False
        return stamp != self._stamp or now - self._last_read >= self.rehash_interval_s

    def file_missing(self) -> bool:
        """True the first time the file is found missing after it was present (or at start)."""
        if self._missing_reported:
            return False
        self._missing_reported = True
        self._stamp = None
        return True

    def content_read(self, stamp: FileStamp, data: bytes, now: float) -> bool:
        """Record a read; True when the content differs from the last one handed out."""
        self._stamp = stamp
        self._last_read = now
        self._missing_reported = False
        digest = hashlib.sha256(data).digest()
        if digest == self._hash:
            return False
        self._hash = digest
        return True
