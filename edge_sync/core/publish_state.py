"""The latest desired message per (namespace, service label), and what NATS has acknowledged.

Sources overwrite the desired state as often as they like; the NATS adapter
drains dirty keys in batches. Many changes of one key while NATS is away are
one publish when it is back (state, not deltas), and memory stays bounded by
the number of services: an acknowledged tombstone is forgotten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from syncmesh import subjects
from syncmesh.digest import service_set_digest
from syncmesh.schema import SCHEMA_VERSION, Instance, ServiceState, encode

__all__ = ["Key", "Outgoing", "Held", "PublishState", "content_digest"]

Key = tuple[str, str]  # (namespace, service label)

_digest_encoder = msgspec.msgpack.Encoder(order="deterministic")


def content_digest(source_name: str, instances: Iterable[Instance], deleted: bool) -> bytes:
    """What a message says about its service, for "did it change": instances sorted by id."""
    ordered = tuple(sorted(instances, key=lambda i: i.id))
    return hashlib.blake2b(
        _digest_encoder.encode((source_name, deleted, ordered)), digest_size=16
    ).digest()


class Held(NamedTuple):
    """What the stream holds for a key: the content of its last message and its order."""

    # content_digest() of the message; b"" when it could not be read (never equal to a desire).
    digest: bytes
    epoch: int
    revision: int
    # A live state a consumer would have accepted: part of the service-set digest.
    live: bool


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
    # The content NATS holds for this key as far as we know (or that was settled as
    # unpublishable); None: nothing, or unknown (after a failure, or mark_all_dirty()).
    acked_digest: bytes | None = None
    acked_revision: int = 0
    acked_epoch: int = 0
    # Whether the last message NATS acknowledged for this key was a live state.
    acked_live: bool = False
    # Revision of the one message in flight for this key (0: none). A report about
    # any other revision is stale (given up on by requeue_inflight) and ignored.
    inflight_revision: int = 0
    # A publish of this key failed or was given up on and may have landed anyway: the
    # acked_* fields may be behind the stream until a later message is acknowledged
    # or the key's last message is read back (observed()).
    unknown: bool = False


class PublishState:
    """Invariants (checked by tests/core/test_edge_publish_state_machine.py):

    - every dirty key has an entry; a key is dirty only while its desired content
      differs from what NATS acknowledged (``digest != acked_digest``);
    - such a key is dirty or in flight, so it is always published eventually;
    - at most one message per key is in flight;
    - an entry is forgotten only when its acknowledged tombstone is also what is
      desired, and then it is neither dirty nor in flight;
    - a key whose stream content is unknown (a failed publish that may have landed)
      and that will not be published again (its new content was refused) is to be
      read back (``unread()``, ``observed()``), so the digest names what the stream holds.
    """

    def __init__(self, cluster: str, epoch: int, source_kind: str) -> None:
        self.cluster = cluster
        self.epoch = epoch
        self.source_kind = source_kind
        self.revision = 0
        self._entries: dict[Key, _Entry] = {}
        # Insertion-ordered set: the oldest change is published first.
        self._dirty: dict[Key, None] = {}
        self._inflight: set[Key] = set()
        self._set_digest: tuple[int, str] | None = None
        # What the stream held, at the last adopt_stream(), for keys the table has no
        # entry for yet: a service the source reports later starts from it, so
        # unchanged content is not published again. Emptied by forget_held().
        self._held: dict[Key, Held] = {}
        # Keys whose last message in the stream must be read back (see observed()).
        self._unread: dict[Key, None] = {}

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
            held = self._held.pop(key, None)
            if held is not None:
                self._seed(entry, held)
            self._entries[key] = entry
        else:
            entry.source_name, entry.instances, entry.deleted = source_name, instances, deleted
            entry.digest = digest
        # Changed and changed back before the adapter got to it: nothing to send.
        self._update_dirty(key, entry)
        return True

    def _update_dirty(self, key: Key, entry: _Entry) -> None:
        if entry.digest != entry.acked_digest:
            self._dirty[key] = None  # an already dirty key keeps its place in line
            return
        self._dirty.pop(key, None)
        if entry.deleted and key not in self._inflight:
            # The tombstone is out and still what is wanted: forget the key (bounded memory).
            del self._entries[key]
            self._unread.pop(key, None)

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
            if key in self._inflight:
                continue  # one message per key in flight keeps the stream's last message the newest
            entry = self._entries[key]
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
            sent = Outgoing(key, subject, message, entry.digest, encode(message))
            # Only now that nothing can fail any more does the key change hands.
            del self._dirty[key]
            self._inflight.add(key)
            entry.inflight_revision = message.revision
            out.append(sent)
        return out

    def _settle(self, sent: Outgoing) -> _Entry | None:
        """The entry of ``sent`` with its flight ended; None for a stale report."""
        entry = self._entries.get(sent.key)
        if entry is None or entry.inflight_revision != sent.message.revision:
            return None
        entry.inflight_revision = 0
        self._inflight.discard(sent.key)
        return entry

    def acked(self, sent: Outgoing) -> None:
        entry = self._settle(sent)
        if entry is None:
            return
        entry.acked_digest = sent.digest
        entry.acked_epoch = sent.message.epoch
        entry.acked_revision = sent.message.revision
        entry.acked_live = not sent.message.deleted
        entry.unknown = False
        self._unread.pop(sent.key, None)
        self._set_digest = None
        self._update_dirty(sent.key, entry)

    def failed(self, sent: Outgoing) -> None:
        entry = self._settle(sent)
        if entry is not None:
            # A timed-out publish may have been stored all the same: what NATS holds is
            # unknown now, so the key is published again whatever is desired next.
            entry.acked_digest = None
            entry.unknown = True
            self._update_dirty(sent.key, entry)

    def unpublishable(self, sent: Outgoing) -> None:
        """The registry would reject this content: not sent, and not tried again until it
        changes. The stream keeps what it had, as the registry would have kept it."""
        entry = self._settle(sent)
        if entry is None:
            return
        entry.acked_digest = sent.digest
        if entry.unknown:
            # An earlier publish of this key may have landed although it failed, and
            # nothing will be published over it now: what the stream holds (and so the
            # digest) is only known once its last message is read back.
            self._unread[sent.key] = None
        self._update_dirty(sent.key, entry)

    def requeue_inflight(self) -> int:
        """Take back every message in flight (the adapter was cancelled or crashed mid-batch,
        or restarts): each key is dirty again, and late reports about them are ignored."""
        count = len(self._inflight)
        for key in self._inflight:
            entry = self._entries[key]
            entry.inflight_revision = 0
            entry.acked_digest = None  # it may have landed: unknown, as after failed()
            entry.unknown = True
            self._update_dirty(key, entry)
        self._inflight.clear()
        return count

    def adopt_stream(self, held: Mapping[Key, Held]) -> int:
        """What the stream holds for this cluster, read while nothing is in flight (a start
        or a takeover): ``held`` is complete, a key missing from it has no message there.

        A key whose desired content is what the stream holds is settled without a publish
        (a takeover republishes nothing unchanged); any other is dirty. Returns the number
        of keys that need publishing.
        """
        self._held = {}
        for key, entry in list(self._entries.items()):
            if key in self._inflight:
                continue  # its report decides; adoption happens with nothing in flight anyway
            entry.unknown = False  # the stream was just read: known again
            self._unread.pop(key, None)
            found = held.get(key)
            if found is None:
                entry.acked_digest, entry.acked_epoch, entry.acked_revision = None, 0, 0
                entry.acked_live = False
                if entry.deleted:
                    # A tombstone is wanted and the stream has nothing: nothing to say.
                    self._dirty.pop(key, None)
                    del self._entries[key]
                    continue
            else:
                self._seed(entry, found)
            self._update_dirty(key, entry)
        for key, found in held.items():
            if key not in self._entries:
                self._held[key] = found
        self._set_digest = None
        return len(self._dirty)

    def unread(self) -> list[Key]:
        """Keys whose last message the adapter must read back and report with observed()."""
        return list(self._unread)

    def observed(self, key: Key, held: Held | None) -> bool:
        """What the stream's last message for ``key`` is (None: no message), read back after
        ``unread()`` named the key, with nothing of it in flight. The digest then counts
        exactly that message. The desire and its dirtiness do not change: content settled as
        unpublishable stays settled. False (ignored) when the key no longer needs it."""
        if key not in self._unread:
            return False
        entry = self._entries.get(key)
        if entry is None or key in self._inflight or not entry.unknown:
            # Acknowledged since (acked() cleared it), or in flight: its report decides.
            self._unread.pop(key, None)
            return False
        del self._unread[key]
        entry.unknown = False
        if held is None:
            entry.acked_epoch, entry.acked_revision, entry.acked_live = 0, 0, False
        else:
            entry.acked_epoch, entry.acked_revision = held.epoch, held.revision
            entry.acked_live = held.live
        self._set_digest = None
        return True

    @staticmethod
    def _seed(entry: _Entry, held: Held) -> None:
        entry.acked_digest = held.digest or None
        entry.acked_epoch, entry.acked_revision = held.epoch, held.revision
        entry.acked_live = held.live

    def forget_held(self) -> None:
        """Reconciliation is done: keys the source does not have were tombstoned (their
        entries took the held state over), so what is left are tombstones, forgotten here
        (bounded memory). A live one left (a service written under this cluster after the
        reconciliation, read again after a NATS task restart) stays: the stream and every
        consumer hold it, so the digest must name it."""
        self._held = {k: h for k, h in self._held.items() if h.live}

    def raise_revision(self, revision: int) -> None:
        """Continue above ``revision`` (a message of our epoch found in the stream that this
        run did not send, say a forged one: ours must supersede it)."""
        self.revision = max(self.revision, revision)

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
        return len(self._inflight)

    @property
    def unread_count(self) -> int:
        return len(self._unread)

    def is_live(self, key: Key) -> bool:
        entry = self._entries.get(key)
        return entry is not None and not entry.deleted

    def desired(self, key: Key) -> tuple[str, tuple[Instance, ...], bool] | None:
        entry = self._entries.get(key)
        return None if entry is None else (entry.source_name, entry.instances, entry.deleted)

    def desired_items(self) -> Iterable[tuple[Key, str, tuple[Instance, ...], bool]]:
        """``(key, source_name, instances, deleted)`` of every key the table holds."""
        for key, entry in self._entries.items():
            yield key, entry.source_name, entry.instances, entry.deleted

    def service_set_digest(self) -> tuple[int, str]:
        """``syncmesh.digest`` of every live service the stream holds as far as this table
        knows: acknowledged, or found there at the last adoption (docs/digest.md)."""
        if self._set_digest is None:
            live = [
                (k[0], k[1], e.acked_epoch, e.acked_revision)
                for k, e in self._entries.items()
                if e.acked_live
            ]
            live.extend((k[0], k[1], h.epoch, h.revision) for k, h in self._held.items() if h.live)
            self._set_digest = service_set_digest(live)
        return self._set_digest
