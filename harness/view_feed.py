"""A real ``RegistryView`` fed with sample messages, for the DNS tests and the
DNS benchmark.

The DNS layer is tested and measured against the view the registry runs, not
a stand-in with its own ranking rules: clusters arrive as beats, services as
states (``harness.samples``), both encoded and passed through the registry's
``Ingest`` (the validator, then the view), and gateway probe results are set
the way the probe runner sets them. Every edit returns the ``ViewChange`` the
registry would hand to ``DnsServer.invalidate``.
"""

from __future__ import annotations

import itertools

import msgspec

from global_registry.config import LoadConfig, StaleConfig
from global_registry.core.ingest import Ingest
from global_registry.core.probe_fsm import ProbePhase
from global_registry.core.probes import GatewayId, GatewayStatus
from global_registry.core.rtt import RttScale
from global_registry.core.view import RegistryView
from harness.samples import cluster_beat, epoch_claim, instance, service_state, subject_of
from syncmesh import subjects
from syncmesh.limits import LimitsConfig
from syncmesh.schema import ClusterBeat, Gateway, Instance, Locality, ServiceState, encode
from syncmesh.view_api import ServiceKey, ViewChange

__all__ = ["ViewFeed", "up_status"]

# Older than any beat TTL (after_beats x interval_s): the agent counts as stale.
_STALE_AGE_S = 86_400.0


def up_status(rtt_ms: float | None = None) -> GatewayStatus:
    """A gateway that passes its probes, at ``rtt_ms`` (None: not measured)."""
    if rtt_ms is None:
        return GatewayStatus(phase=ProbePhase.UP, up=True)
    bucket = int(RttScale().position(rtt_ms))
    return GatewayStatus(phase=ProbePhase.UP, up=True, rtt_ms=rtt_ms, rtt_bucket=bucket)


class ViewFeed:
    """A ``RegistryView`` and the messages that build it.

    ``locality`` is this replica's own: the reference for clients in no
    cluster's CIDRs. One revision counter serves every message, so each
    message supersedes the one before it on its subject.
    """

    def __init__(
        self, locality: Locality | None = None, now: float = 0.0, load: LoadConfig | None = None
    ) -> None:
        limits = LimitsConfig()
        self.view = RegistryView(StaleConfig(), limits, locality or Locality(), load=load)
        self.now = now
        self._ingest = Ingest(self.view, limits)
        # An empty stream: caught up at once, so every message reports its change.
        self._ingest.begin(0, now)
        self._revisions = itertools.count(1)
        # Stream sequences: every cluster claims epoch 1 (the builders' default) at
        # sequence 1; messages follow from 2, as in a real stream.
        self._seq = 1
        self._claimed: set[str] = set()
        self._beats: dict[str, ClusterBeat] = {}

    def _send(self, message: ClusterBeat | ServiceState, age_s: float = 0.0) -> ViewChange:
        if message.cluster not in self._claimed:
            self._claimed.add(message.cluster)
            claim = epoch_claim(message.cluster)
            self._ingest.handle(subjects.epoch_subject(message.cluster), encode(claim), 1, self.now)
        self._seq += 1
        result = self._ingest.handle(
            subject_of(message), encode(message), self._seq, self.now, age_s=age_s
        )
        if result.rejected is not None:
            raise ValueError(f"the registry rejects this message: {result.rejected}")
        return result.change

    def cluster(
        self,
        name: str,
        gateways: list[Gateway],
        client_cidrs: list[str] | None = None,
        *,
        region: str = "",
        zone: str = "",
        rtt_ms: float | None = None,
        stale: bool = False,
    ) -> ViewChange:
        """A beat for ``name`` whose gateways all pass their probes at ``rtt_ms``."""
        beat = cluster_beat(
            name,
            revision=next(self._revisions),
            gateways=gateways,
            region=region,
            zone=zone,
            client_cidrs=client_cidrs or [],
        )
        self._beats[name] = beat
        change = self._send(beat, _STALE_AGE_S if stale else 0.0)
        for gateway in gateways:
            change = change.merge(self.probe(name, gateway, up_status(rtt_ms)))
        return change

    def probe(self, cluster: str, gateway: Gateway, status: GatewayStatus) -> ViewChange:
        return self.view.set_gateway_status(
            GatewayId(cluster, gateway.address, gateway.port), status
        )

    def beat(self, name: str, gateways: list[Gateway]) -> ViewChange:
        """A newer beat for ``name`` with other gateways (e.g. the same ones with other
        loads) and everything else as before; no probes."""
        last = self._beats[name]
        beat = msgspec.structs.replace(last, revision=next(self._revisions), gateways=gateways)
        self._beats[name] = beat
        return self._send(beat)

    def service(
        self,
        key: ServiceKey,
        cluster: str,
        healthy: int = 1,
        critical: int = 0,
        instances: list[Instance] | None = None,
    ) -> ViewChange:
        """``key`` in ``cluster`` with ``healthy`` passing and ``critical`` failing instances
        (or exactly ``instances``)."""
        instances = instances or [
            instance(id=f"i{i}", address=f"192.0.2.{i + 1}", health="passing")
            for i in range(healthy)
        ] + [
            instance(id=f"c{i}", address=f"198.51.100.{i + 1}", health="critical")
            for i in range(critical)
        ]
        state = service_state(
            cluster,
            key.service,
            key.namespace,
            revision=next(self._revisions),
            instances=instances,
        )
        return self._send(state)

    def delete(self, key: ServiceKey, cluster: str) -> ViewChange:
        """A tombstone for ``key`` in ``cluster``."""
        state = service_state(
            cluster,
            key.service,
            key.namespace,
            revision=next(self._revisions),
            instances=[],
            deleted=True,
        )
        return self._send(state)
