"""The latest desired message per (namespace, service label), and what NATS has acknowledged.

Sources overwrite the desired state as often as they like; the NATS adapter
drains dirty keys in batches. Many changes of one key while NATS is away are
one publish when it is back (state, not deltas), and memory stays bounded by
the number of services: an acknowledged tombstone is forgotten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from syncmesh import subjects
from syncmesh.schema import SCHEMA_VERSION, Instance, ServiceState, encode

__all__ = ["Key", "Outgoing", "PublishState"]

Key = tuple[str, str]  # (namespace, service label)

_digest_encoder = msgspec.msgpack.Encoder(order="deterministic")


def content_digest(source_name: str, instances: tuple[Instance, ...], deleted: bool) -> bytes:
    return hashlib.blake2b(
        _digest_encoder.encode((source_name, deleted, instances)), digest_size=16
    ).digest()


class Outgoing(NamedTuple):
    """One message handed to the NATS adapter; report it back with acked() or failed()."""

    key: Key
    subject: str
    message: ServiceState
    digest: bytes
    # The encoded message: validated as the registry will, then published as is.
    data: bytes


@dataclass(slots=True)
class _Entry:
    source_name: str
    instances: tuple[Instance, ...]
    deleted: bool
    digest: bytes
    acked_digest: bytes | None = None
    acked_revision: int = 0
    # Whether the last message NATS acknowledged for this key was a live state.
    acked_live: bool = False
    inflight: bool = False


class PublishState:
    def __init__(self, cluster: str, epoch: int, source_kind: str) -> None:
        self.cluster = cluster
        self.epoch = epoch
        self.source_kind = source_kind
        self.revision = 0
        self._entries: dict[Key, _Entry] = {}
        # Insertion-ordered set: the oldest change is published first.
        self._dirty: dict[Key, None] = {}
        self._inflight = 0
        self._set_digest: tuple[int, str] | None = None

    # -- desired state -------------------------------------------------
    def set_service(self, key: Key, source_name: str, instances: Iterable[Instance]) -> bool:
        """Desire the full state of a live service; True when it differs from before."""
        ordered = tuple(sorted(instances, key=lambda i: i.id))
        return self._desire(key, source_name, ordered, deleted=False)

    def set_tombstone(self, key: Key, source_name: str | None = None, force: bool = False) -> bool:
        """Desire a tombstone for a key this agent holds (or, with ``force``, one only NATS holds)."""
        entry = self._entries.get(key)
        if entry is None:
            if not force:
                return False
            return self._desire(key, source_name or key[1], (), deleted=True)
        if entry.deleted:
            return False
        return self._desire(key, source_name or entry.source_name, (), deleted=True)

    def _desire(
        self, key: Key, source_name: str, instances: tuple[Instance, ...], deleted: bool
    ) -> bool:
        digest = content_digest(source_name, instances, deleted)
        entry = self._entries.get(key)
        if entry is not None and entry.digest == digest:
            return False
        if entry is None:
            entry = _Entry(source_name, instances, deleted, digest)
            self._entries[key] = entry
        else:
            entry.source_name, entry.instances, entry.deleted = source_name, instances, deleted
            entry.digest = digest
        if entry.acked_digest == digest:
            # Changed and changed back before the adapter got to it: nothing to send.
            self._dirty.pop(key, None)
        else:
            self._dirty[key] = None
        return True

    # -- draining ------------------------------------------------------
    def next_revision(self) -> int:
        self.revision += 1
        return self.revision

    def take(self, limit: int) -> list[Outgoing]:
        """Up to ``limit`` dirty keys as messages with fresh revisions, oldest change first."""
        out: list[Outgoing] = []
        for key in list(self._dirty):
            if len(out) >= limit:
                break
            entry = self._entries[key]
            if entry.inflight:
                continue  # one message per key in flight keeps the stream's last message the newest
            del self._dirty[key]
            entry.inflight = True
            self._inflight += 1
            message = ServiceState(
                schema=SCHEMA_VERSION,
                cluster=self.cluster,
                namespace=key[0],
                service=key[1],
                epoch=self.epoch,
                revision=self.next_revision(),
                source=self.source_kind,  # type: ignore[arg-type]
                source_name=entry.source_name,
                instances=list(entry.instances),
                deleted=entry.deleted,
            )
            subject = subjects.service_subject(self.cluster, *key)
            out.append(Outgoing(key, subject, message, entry.digest, encode(message)))
        return out

    def acked(self, sent: Outgoing) -> None:
        entry = self._entries.get(sent.key)
        if entry is None:
            return
        self._settle(entry)
        entry.acked_digest = sent.digest
        entry.acked_revision = sent.message.revision
        entry.acked_live = not sent.message.deleted
        self._set_digest = None
        if entry.digest != sent.digest:
            self._dirty[sent.key] = None
        elif entry.deleted:
            del self._entries[sent.key]

    def failed(self, sent: Outgoing) -> None:
        entry = self._entries.get(sent.key)
        if entry is None:
            return
        self._settle(entry)
        if entry.acked_digest != entry.digest:
            self._dirty[sent.key] = None

    def unpublishable(self, sent: Outgoing) -> None:
        """The registry would reject this content: not sent, and not tried again until it
        changes. The stream keeps what it had, as the registry would have kept it."""
        entry = self._entries.get(sent.key)
        if entry is None:
            return
        self._settle(entry)
        entry.acked_digest = sent.digest
        if entry.digest != sent.digest:
            self._dirty[sent.key] = None

    def _settle(self, entry: _Entry) -> None:
        if entry.inflight:
            entry.inflight = False
            self._inflight -= 1

    def mark_all_dirty(self) -> int:
        """Republish every key (a resync request, or a stream that lost its data)."""
        for key, entry in self._entries.items():
            entry.acked_digest = None
            self._dirty[key] = None
        self._set_digest = None
        return len(self._dirty)

    # -- views ---------------------------------------------------------
    @property
    def dirty_count(self) -> int:
        return len(self._dirty)

    @property
    def inflight_count(self) -> int:
        return self._inflight

    def is_live(self, key: Key) -> bool:
        entry = self._entries.get(key)
        return entry is not None and not entry.deleted

    def live_keys(self) -> Iterator[Key]:
        return (k for k, e in self._entries.items() if not e.deleted)

    def desired(self, key: Key) -> tuple[str, tuple[Instance, ...], bool] | None:
        entry = self._entries.get(key)
        return None if entry is None else (entry.source_name, entry.instances, entry.deleted)

    def service_set_digest(self) -> tuple[int, str]:
        """Count and SHA-256 of the sorted ``<namespace>/<service>=<revision>`` lines of every
        live service NATS has acknowledged (see docs/edge.md, anti-entropy)."""
        if self._set_digest is None:
            lines = sorted(
                f"{k[0]}/{k[1]}={e.acked_revision}\n"
                for k, e in self._entries.items()
                if e.acked_live
            )
            self._set_digest = (len(lines), hashlib.sha256("".join(lines).encode()).hexdigest())
        return self._set_digest
