"""The agent's pure core: source view -> labels -> desired messages, reconciliation, beats.

No clock and no IO: the adapters pass ``now`` (loop time) or a wall-clock
stamp in and act on what the methods return.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from edge_sync.config import EdgeConfig
from edge_sync.core.filters import ServiceFilter
from edge_sync.core.labeling import LabelBook
from edge_sync.core.load import GatewayLoads
from edge_sync.core.model import ServiceRef, SourceService
from edge_sync.core.publish_state import Held, Key, Outgoing, PublishState, content_digest
from edge_sync.core.ratelimit import TokenBucket
from syncmesh import subjects
from syncmesh.labels import LabelCollision
from syncmesh.schema import SCHEMA_VERSION, ClusterBeat, ServiceState, encode
from syncmesh.validate import Rejected, validate_message

__all__ = ["RemoteService", "Batch", "OutgoingBeat", "Readiness", "EdgeCore"]

MAX_ERROR_TEXT = 256


class RemoteService(NamedTuple):
    """What the stream holds for one of this cluster's subjects at start-up or a takeover."""

    source_name: str
    deleted: bool
    # The message itself (None: undecodable) and the stream sequence it is stored at.
    state: ServiceState | None = None
    seq: int = 0


class Batch(NamedTuple):
    """Messages to publish, and those the registry would reject (never sent)."""

    outgoing: list[Outgoing]
    rejected: list[tuple[Outgoing, Rejected]]


class OutgoingBeat(NamedTuple):
    subject: str
    beat: ClusterBeat
    data: bytes


class Readiness(NamedTuple):
    """``/readyz``: ready once the source was read completely and NATS is connected."""

    ready: bool
    source_synced: bool
    nats_connected: bool
    epoch: int
    deposed: bool
    source_health: str
    pending: int
    # "leader" (claimed, publishing), "standby" (another agent leads) or "starting".
    role: str = "starting"


class EdgeCore:
    """``epoch`` is 0 until the NATS adapter has claimed one (``set_epoch``); nothing is
    taken for publishing before that."""

    def __init__(
        self,
        config: EdgeConfig,
        now: float,
        agent_version: str = "",
        epoch: int = 0,
        agent: str = "",
    ) -> None:
        self.config = config
        self.cluster = config.cluster
        self.epoch = epoch
        self.agent_version = agent_version
        # host:pid, announced as the beat's ``leader``; ``standbys`` as the adapter counts them.
        self.agent = agent
        self.standbys = 0
        self.state = PublishState(config.cluster, epoch, config.source.kind)
        self.filter = ServiceFilter(config.filters)
        self._books: dict[str, LabelBook] = {}
        self._services: dict[ServiceRef, SourceService] = {}
        self._instances = 0
        self.source_synced = False
        self._remote: dict[Key, RemoteService] | None = None
        self.reconciled = False
        self.source_health = "ok"
        self.source_error_text = ""
        # A flood of resync requests must not turn into a flood of full republishes.
        self._resync_bucket = TokenBucket(rate=0.2, burst=2, now=now)
        self._resync_pending = False
        # Each gateway's current load (edge_sync.io.load keeps it fresh); beats carry it.
        self.loads = GatewayLoads(config.load.sources)

    # -- source events -------------------------------------------------
    def apply(
        self, changed: Iterable[SourceService] = (), removed: Iterable[ServiceRef] = ()
    ) -> list[LabelCollision]:
        """Fold source changes in; returns the label collisions they caused."""
        collisions: list[LabelCollision] = []
        for ref in removed:
            self._remove(ref)
        for service in changed:
            if not self.filter.accepts(service.namespace, service.source_name):
                self._remove(service.ref)
                continue
            self._put(service, collisions)
        return collisions

    def replace_all(self, services: Iterable[SourceService]) -> list[LabelCollision]:
        """A source that always reports its whole view (the service file)."""
        fresh = {s.ref: s for s in services}
        gone = [ref for ref in self._services if ref not in fresh]
        return self.apply(fresh.values(), gone)

    def _put(self, service: SourceService, collisions: list[LabelCollision]) -> None:
        ref = service.ref
        previous = self._services.get(ref)
        if previous == service:
            return
        self._services[ref] = service
        self._instances += len(service.instances) - (len(previous.instances) if previous else 0)
        book = self._books.setdefault(service.namespace, LabelBook())
        change = book.add(service.name)
        key = (service.namespace, change.label)
        if change.after == service.name:
            self.state.set_service(key, service.source_name, service.instances)
            if change.before is not None and change.before != service.name:
                collisions.append(LabelCollision(change.label, service.name, change.before))
        elif previous is None:
            collisions.append(LabelCollision(change.label, change.after or "", service.name))

    def _remove(self, ref: ServiceRef) -> None:
        service = self._services.pop(ref, None)
        if service is None:
            return
        self._instances -= len(service.instances)
        book = self._books[ref.namespace]
        change = book.remove(ref.name)
        if not len(book):
            del self._books[ref.namespace]
        if change is None or change.before != ref.name:
            return
        key = (ref.namespace, change.label)
        if change.after is None:
            self.state.set_tombstone(key, service.source_name)
        else:
            heir = self._services[ServiceRef(ref.namespace, change.after)]
            self.state.set_service(key, heir.source_name, heir.instances)

    def mark_source_synced(self) -> int:
        """The source has shown its complete view once; returns start-up tombstones queued."""
        self.source_synced = True
        return self._reconcile()

    def source_failed(self, reason: str, detail: str) -> None:
        self.source_health = "degraded"
        self.source_error_text = f"{reason}: {detail}"[:MAX_ERROR_TEXT]

    def source_recovered(self) -> None:
        self.source_health = "ok"
        self.source_error_text = ""

    # -- NATS events ---------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """The claim's stream sequence; every later state and beat carries it."""
        self.epoch = epoch
        self.state.epoch = epoch

    def step_down(self) -> None:
        """Another agent took the cluster over: stop publishing, keep following the source.
        A later takeover reads the stream again (``remote_loaded``) and reconciles anew."""
        self.set_epoch(0)
        self.reconciled = False
        self._remote = None
        self._resync_pending = False
        self.standbys = 0

    def remote_loaded(self, remote: dict[Key, RemoteService]) -> int:
        """What the stream holds for this cluster (at start, or at a takeover), read after
        the claim and before anything is published; returns tombstones queued.

        What the stream holds and the source still wants is not published again; a
        message of our own epoch that this run did not send (forged) is outbid.
        """
        held: dict[Key, Held] = {}
        for key, remote_service in remote.items():
            held[key] = self._held_from(key, remote_service)
        self.state.adopt_stream(held)
        if self.reconciled:
            # Read again after a NATS task restart: reconciliation happens once per term.
            self.state.forget_held()
            return 0
        self._remote = remote
        return self._reconcile()

    def outbid(self, remote: dict[Key, RemoteService]) -> int:
        """Before a resync republishes everything: continue above any revision of our own
        epoch found in the stream (a message this run did not send would otherwise keep
        winning over ours). Returns the revision the next message will exceed."""
        for remote_service in remote.values():
            state = remote_service.state
            if state is not None and state.epoch == self.epoch:
                self.state.raise_revision(state.revision)
        return self.state.revision

    def observed(self, key: Key, remote: RemoteService | None) -> bool:
        """The last message of one key, read back because ``state.unread()`` named it (a
        failed publish that may have landed, then content the validator refused): the
        digest counts what the stream holds. None: no message there."""
        held = None if remote is None else self._held_from(key, remote)
        return self.state.observed(key, held)

    def _held_from(self, key: Key, remote: RemoteService) -> Held:
        state = remote.state
        # What a consumer would accept as it is: decodable, for its own subject, and an
        # epoch below its own stream sequence and not above ours (the fence's rules).
        if (
            state is None
            or (state.cluster, state.namespace, state.service) != (self.cluster, *key)
            or not state.epoch < remote.seq
            or (self.epoch and state.epoch > self.epoch)
        ):
            return Held(b"", 0, 0, live=False)
        if state.epoch == self.epoch:
            self.state.raise_revision(state.revision)
        digest = content_digest(state.source_name, state.instances, state.deleted)
        return Held(digest, state.epoch, state.revision, live=not state.deleted)

    def _reconcile(self) -> int:
        if self.reconciled or not self.source_synced or self._remote is None:
            return 0
        queued = 0
        for key, remote in self._remote.items():
            if remote.deleted or self.state.is_live(key):
                continue
            if self.state.set_tombstone(key, remote.source_name, force=True):
                queued += 1
        self._remote = None
        self.state.forget_held()
        self.reconciled = True
        return queued

    def resync_requested(self, now: float) -> bool:
        """True when the republish happens now; otherwise it is kept for resync_due()."""
        self._resync_pending = True
        return self.resync_due(now)

    def resync_due(self, now: float) -> bool:
        if not self._resync_pending or not self._resync_bucket.try_take(now):
            return False
        self._resync_pending = False
        self.state.mark_all_dirty()
        return True

    def take_batch(self, limit: int) -> Batch:
        """Up to ``limit`` dirty keys, each checked with the registry's own validator.

        A message it would reject is settled as unpublishable (the stream keeps what
        it had, exactly as the registry would) and returned for counting and logging.
        """
        outgoing: list[Outgoing] = []
        rejected: list[tuple[Outgoing, Rejected]] = []
        limits = self.config.limits
        for sent in self.state.take(limit):
            try:
                validate_message(sent.subject, sent.data, limits)
            except Rejected as exc:
                self.state.unpublishable(sent)
                rejected.append((sent, exc))
            else:
                outgoing.append(sent)
        return Batch(outgoing, rejected)

    def beat_message(self, sent_at: float) -> OutgoingBeat:
        """The next beat, encoded and checked like the registry does; raises ``Rejected``."""
        beat = self.beat(sent_at)
        self.loads.announce(beat.gateways)
        subject = subjects.cluster_subject(self.cluster)
        data = encode(beat)
        validate_message(subject, data, self.config.limits)
        return OutgoingBeat(subject, beat, data)

    def config_problem(self) -> Rejected | None:
        """What the registry's validator says about this agent's beats (None: nothing).

        Checked once at start, on top of the config's own checks, so that a rule the
        registry adds later cannot make every beat of a running agent vanish.
        """
        data = encode(self.beat(sent_at=0.0, revision=0))
        try:
            validate_message(subjects.cluster_subject(self.cluster), data, self.config.limits)
        except Rejected as exc:
            return exc
        return None

    def beat(self, sent_at: float, revision: int | None = None) -> ClusterBeat:
        count, digest = self.state.service_set_digest()
        if self.state.unread_count:
            # What the stream holds for some key is being read back: "" = do not compare.
            digest = ""
        cfg = self.config
        return ClusterBeat(
            schema=SCHEMA_VERSION,
            cluster=self.cluster,
            epoch=self.epoch,
            revision=self.state.next_revision() if revision is None else revision,
            interval_s=cfg.beat_interval_s,
            gateways=self.loads.apply(cfg.gateways),
            locality=cfg.locality,
            client_cidrs=list(cfg.client_cidrs),
            agent_version=self.agent_version,
            source_kind=cfg.source.kind,
            source_health=self.source_health,  # type: ignore[arg-type]
            source_error=self.source_error_text,
            services=count,
            digest=digest,
            sent_at=sent_at,
            leader=self.agent,
            standbys=self.standbys,
        )

    def readiness(self, nats_connected: bool, deposed: bool, standby: bool = False) -> Readiness:
        """Ready: the source was read completely, NATS is connected, and the agent either
        claimed the cluster (nothing is published before the claim) or stands by warm."""
        role = "leader" if self.epoch > 0 else ("standby" if standby else "starting")
        ready = self.source_synced and nats_connected and role != "starting" and not deposed
        return Readiness(
            ready=ready,
            source_synced=self.source_synced,
            nats_connected=nats_connected,
            epoch=self.epoch,
            deposed=deposed,
            source_health=self.source_health,
            pending=self.state.dirty_count + self.state.inflight_count,
            role=role,
        )

    # -- views ---------------------------------------------------------
    @property
    def service_count(self) -> int:
        return len(self._services)

    @property
    def instance_count(self) -> int:
        return self._instances

    @property
    def collision_count(self) -> int:
        return sum(book.collision_count() for book in self._books.values())

    def services(self) -> list[SourceService]:
        return list(self._services.values())

    @property
    def synced(self) -> bool:
        """The source's view is fully published and start-up tombstones are out."""
        return (
            self.source_synced
            and self.reconciled
            and self.state.dirty_count == 0
            and self.state.inflight_count == 0
            and self.state.unread_count == 0
        )
