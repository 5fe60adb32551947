"""Short nemesis campaigns in CI: the whole system on real peers, faults injected,
and the checker's verdict (no lost update, no resurrection, right DNS answers).

Longer campaigns: ``./run nemesis --seeds N --minutes M`` (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.nemesis import run_campaign, summarise
from harness.nemesis_plan import Fault, FaultKind, plan
from harness.nemesis_system import LIBFAKETIME

pytestmark = [pytest.mark.peers, pytest.mark.reliability, pytest.mark.timeout(900)]

# Regression: one message with an epoch a year ahead froze a cluster for good
# (issue 10 #1); found again by this campaign before epochs became NATS claims.
# north runs a standby group: its leader is killed, later frozen past its lease
# (the standby takes over; the thawed one is fenced and stands by).
POISON_AND_RESTARTS = [
    Fault(FaultKind.CLOCK_AHEAD_AGENT, "north", 5.0),
    Fault(FaultKind.KILL_LEADER, "north", 5.0),
    Fault(FaultKind.FREEZE_NATS_NODE, "n1", 5.0),
    Fault(FaultKind.WIPE_CONSUL, "consul", 4.0),
    Fault(FaultKind.FREEZE_LEADER, "north", 6.0),
    Fault(FaultKind.CLOCK_BEHIND_AGENT, "east", 4.0),
]


async def test_clock_steps_freezes_leader_faults_and_a_wiped_consul_lose_nothing(
    tmp_path: Path,
) -> None:
    assert LIBFAKETIME.exists(), "apt-get install faketime (./run test installs it)"
    results = await run_campaign(seed=101, faults=POISON_AND_RESTARTS, workdir=tmp_path)
    failed = [r for r in results if not r.ok]
    assert not failed, f"{summarise(results)}\n{failed}"
    assert len(results) == len(POISON_AND_RESTARTS) + 1


async def test_a_seeded_campaign_of_process_faults_converges(tmp_path: Path) -> None:
    kinds = [
        FaultKind.KILL_AGENT,
        FaultKind.FREEZE_AGENT,
        FaultKind.KILL_REGISTRY,
        FaultKind.FREEZE_REGISTRY,
        FaultKind.KILL_NATS_NODE,
        FaultKind.FLAP_GATEWAY,
    ]
    faults = plan(seed=7, count=6, kinds=kinds)
    results = await run_campaign(seed=7, faults=faults, workdir=tmp_path)
    failed = [r for r in results if not r.ok]
    assert not failed, f"{summarise(results)}\n{failed}"
