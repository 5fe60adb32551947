"""``syncmesh retire-cluster NAME``: a decommissioned cluster leaves every view.

It claims the cluster's epoch (so an agent that is still running somewhere is
fenced out by the server and exits as deposed), tombstones every service the
stream still holds for the cluster, and publishes a retired beat. Registries and
``watch_inventory`` then forget the cluster. Tombstones and the retired beat
carry ``Nats-TTL`` and leave the stream after ``--ttl`` seconds; the claim stays,
so no late message of the old agent is ever believed again. A new agent for the
same name later simply claims a newer epoch.

Needs the ``operator`` NATS role (``syncmesh nats-permissions operator -``).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from edge_sync.core.epoch_claim import EpochClaimer
from edge_sync.io.epoch import claim_epoch
from edge_sync.io.remote_state import read_last_states
from syncmesh import subjects
from syncmesh.limits import LimitsConfig
from syncmesh.schema import SCHEMA_VERSION, ClusterBeat, ServiceState, encode
from syncmesh.validate import validate_message
from syncmesh_app.ops.commands import Options, cli_connection

__all__ = ["RetireReport", "retire_cluster"]


@dataclass
class RetireReport:
    cluster: str
    epoch: int
    tombstoned: list[str]
    already_deleted: int


def _publish_headers(
    claimer: EpochClaimer, epoch: int, revision: int, ttl_s: int
) -> dict[str, str]:
    headers = claimer.fence_headers(epoch)
    headers["Nats-Msg-Id"] = subjects.msg_id(claimer.cluster, epoch, revision)
    if ttl_s > 0:
        headers["Nats-TTL"] = f"{ttl_s}s"
    return headers


async def _publish(
    js: Any, subject: str, message: ServiceState | ClusterBeat, headers: dict[str, str]
) -> None:
    data = encode(message)
    # The same validator every consumer runs: never publish what they would reject.
    validate_message(subject, data, LimitsConfig())
    await js.publish(subject, data, headers=headers)


async def retire_cluster(opts: Options, cluster: str, ttl_s: int, dry_run: bool) -> RetireReport:
    async with cli_connection(opts) as nc:
        js = nc.jetstream(timeout=opts.timeout_s)
        states = await read_last_states(js, cluster, idle_timeout_s=min(opts.timeout_s, 2.0))
        live = sorted(key for key, state in states.items() if state is None or not state.deleted)
        report = RetireReport(
            cluster, 0, [f"{ns}/{svc}" for ns, svc in live], len(states) - len(live)
        )
        if dry_run:
            return report

        claimer = EpochClaimer(
            cluster,
            agent=f"retire-cluster@{socket.gethostname()}:{os.getpid()}",
            nonce=uuid.uuid4().hex,
        )

        def on_error(exc: BaseException, attempt: int) -> None:
            if attempt >= 5:
                raise exc

        epoch = await claim_epoch(js, claimer, on_error)
        report.epoch = epoch
        revision = 0
        for namespace, service in live:
            revision += 1
            state = states[(namespace, service)]
            tombstone = ServiceState(
                schema=SCHEMA_VERSION,
                cluster=cluster,
                namespace=namespace,
                service=service,
                epoch=epoch,
                revision=revision,
                source=state.source if state is not None else "file",
                source_name=state.source_name if state is not None else service,
                deleted=True,
            )
            await _publish(
                js,
                subjects.service_subject(cluster, namespace, service),
                tombstone,
                _publish_headers(claimer, epoch, revision, ttl_s),
            )
        revision += 1
        beat = ClusterBeat(
            schema=SCHEMA_VERSION,
            cluster=cluster,
            epoch=epoch,
            revision=revision,
            interval_s=3600,
            sent_at=time.time(),
            retired=True,
        )
        await _publish(
            js,
            subjects.cluster_subject(cluster),
            beat,
            _publish_headers(claimer, epoch, revision, ttl_s),
        )
        return report
