"""The nemesis: a seeded fault campaign against the real system, and the checker.

``python -m harness.nemesis --seed 7 --faults 6`` (``./run nemesis --seeds N
--minutes M`` for long campaigns) starts the system of ``harness.nemesis_system``,
churns services in Consul, Nacos and the service file, and injects faults one
after the other. After each fault heals it pauses the churn and waits until
every registry replica's inventory equals the union of the sources (no lost
registration, no lost deletion, no resurrected instance) and every name answers
the nearest healthy cluster over DNS; the time that takes is the fault's
convergence time. While a fault lasts, DNS is sampled and answers that differ
from the expected one (with the fault's designed effect: a gateway down is no
candidate, a stale agent's cluster ranks last) for longer than a grace period
are counted as wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import msgspec

from harness.nemesis_churn import GRACE_S, NAMESPACE, SERVICES, Churn
from harness.nemesis_plan import (
    GATEWAY_ADDRESS,
    NEAREST_ORDER,
    Fault,
    FaultKind,
    InstanceView,
    Truth,
    diff,
    expected_cluster,
    percentile,
    plan,
)
from harness.nemesis_system import LIBFAKETIME, NemesisSystem, nemesis_system
from syncmesh.schema import Inventory

__all__ = ["FaultResult", "run_campaign", "main", "Churn", "SERVICES", "NAMESPACE"]

log = logging.getLogger("nemesis")

ZONE = "syncmesh.internal."
CONVERGE_TIMEOUT_S = 120.0


@dataclass
class FaultResult:
    fault: str
    converge_s: float
    wrong_samples: int
    samples: int
    wrong_s: float
    ok: bool
    problems: list[str] = field(default_factory=list)


async def read_truth(system: NemesisSystem, churn: Churn) -> Truth:
    """What the sources hold now: Consul and Nacos asked, the file as written."""
    truth: dict[tuple[str, str, str], frozenset[InstanceView]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for service in SERVICES:
            url = f"{system.consul.http_url}/v1/health/service/{service}"
            async with http.get(url) as resp:
                resp.raise_for_status()
                entries = await resp.json()
            consul = set()
            for entry in entries:
                statuses = {c["Status"] for c in entry["Checks"]}
                health = next((s for s in ("critical", "warning") if s in statuses), "passing")
                svc = entry["Service"]
                consul.add((svc["Address"], int(svc["Port"]), health))
            if consul:
                truth[("east", NAMESPACE, service)] = frozenset(consul)
            params = {"serviceName": service, "healthyOnly": "false"}
            async with http.get(
                f"{system.nacos.base_url}/v1/ns/instance/list", params=params
            ) as resp:
                hosts = (await resp.json(content_type=None)).get("hosts", []) if resp.ok else []
            nacos = {
                (
                    h["ip"],
                    int(h["port"]),
                    "passing" if h.get("healthy") and h.get("enabled", True) else "critical",
                )
                for h in hosts
            }
            if nacos:
                truth[("west", NAMESPACE, service)] = frozenset(nacos)
    for service, instances in churn.file_state.items():
        if instances:
            truth[("north", NAMESPACE, service)] = frozenset(instances)
    return truth


async def read_inventory_http(port: int) -> Truth:
    """A given replica's inventory over its admin HTTP (``/v1/inventory``)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(f"http://127.0.0.1:{port}/v1/inventory") as resp,
    ):
        resp.raise_for_status()
        inventory = msgspec.json.decode(await resp.read(), type=Inventory)
    seen: dict[tuple[str, str, str], frozenset[InstanceView]] = {}
    for svc in inventory.services:
        instances = frozenset((i.address, i.port, i.health) for i in svc.instances)
        if instances:
            seen[(svc.cluster, svc.namespace, svc.service)] = instances
    return seen


async def dns_answer(port: int, service: str) -> set[str]:
    query = dns.message.make_query(f"{service}.{NAMESPACE}.svc.{ZONE}", "A")
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=2)
    if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise RuntimeError(f"{service}: rcode {dns.rcode.to_text(response.rcode())}")
    return {item.address for rrset in response.answer for item in rrset if rrset.rdtype == 1}


def _expected_ips(cluster: str | None) -> set[str]:
    return {GATEWAY_ADDRESS[cluster]} if cluster else set()


async def check_once(system: NemesisSystem, churn: Churn) -> list[str]:
    truth = await read_truth(system, churn)
    problems = []
    for reg in system.registries.values():
        seen = await read_inventory_http(reg.admin_port)
        problems += [f"{reg.name}: {p}" for p in diff(truth, seen)]
        for service in SERVICES:
            want = _expected_ips(expected_cluster(truth, NAMESPACE, service))
            got = await dns_answer(reg.dns_port, service)
            if got != want:
                problems.append(f"{reg.name}: DNS {service} -> {sorted(got)}, want {sorted(want)}")
    return problems


async def converge(system: NemesisSystem, churn: Churn, timeout: float) -> tuple[float, list[str]]:
    started = last_report = time.monotonic()
    problems: list[str] = ["not checked"]
    while time.monotonic() - started < timeout:
        try:
            problems = await check_once(system, churn)
        except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError, ValueError) as exc:
            problems = [f"check failed: {type(exc).__name__}: {exc}"]
        if not problems:
            return time.monotonic() - started, []
        now = time.monotonic()
        if now - last_report >= 5.0:
            last_report = now
            log.info("  not converged after %.0fs: %s", now - started, problems[:3])
        await asyncio.sleep(0.5)
    return time.monotonic() - started, problems


def _expected_during(
    model: dict[tuple[str, str], frozenset[InstanceView]], fault: Fault, service: str
) -> str | None:
    """The cluster a healthy answer names while ``fault`` lasts (its designed effect)."""
    excluded = {fault.target} if fault.kind is FaultKind.FLAP_GATEWAY else set()
    demoted = (
        {fault.target} if fault.kind in (FaultKind.KILL_AGENT, FaultKind.FREEZE_AGENT) else set()
    )
    order = [c for c in NEAREST_ORDER if c not in excluded and c not in demoted]
    order += [c for c in NEAREST_ORDER if c in demoted]
    for cluster in order:
        instances = model.get((cluster, service), frozenset())
        if any(h != "critical" for _, _, h in instances):
            return cluster
    return None


async def sample_during(
    system: NemesisSystem, churn: Churn, fault: Fault, stop: asyncio.Event
) -> tuple[int, int]:
    """(wrong, total) DNS samples, one per name per second, from a replica that is not
    the fault's target. An answer is right when it names what the sources held at any
    moment of the last GRACE_S seconds (propagation and probe fall/rise take time);
    the first GRACE_S seconds after the fault starts are not judged."""
    replica = next(r for n, r in system.registries.items() if n != fault.target)
    wrong = total = 0
    injected = time.monotonic()
    while not stop.is_set():
        if time.monotonic() - injected >= GRACE_S:
            models = [churn.model, *(m for _, m in churn.history)]
            for service in SERVICES:
                try:
                    got = await dns_answer(replica.dns_port, service)
                except (OSError, TimeoutError, RuntimeError, dns.exception.DNSException):
                    got = {"<no answer>"}
                total += 1
                allowed = [_expected_ips(_expected_during(m, fault, service)) for m in models]
                if got not in allowed:
                    wrong += 1
                    log.info("  wrong answer for %s: %s (allowed %s)", service, got, allowed[0])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return wrong, total


async def inject(system: NemesisSystem, fault: Fault) -> None:
    """Start the fault and hold it for ``fault.hold_s``; then heal it."""
    kind, target = fault.kind, fault.target
    if kind is FaultKind.KILL_NATS_NODE:
        index = system.nats_index(target)
        await system.nats.stop_node(index, hard=True)
        await asyncio.sleep(fault.hold_s)
        await system.nats.start_node(index)
    elif kind is FaultKind.FREEZE_NATS_NODE:
        process = system.nats.nodes[system.nats_index(target)].process
        system.freeze(process)
        await asyncio.sleep(fault.hold_s)
        system.thaw(process)
    elif kind is FaultKind.KILL_AGENT:
        agent = system.agents[target]
        assert agent.process is not None
        agent.process.kill()
        await asyncio.sleep(fault.hold_s)
        await system.restart_agent(target)
    elif kind is FaultKind.FREEZE_AGENT:
        agent = system.agents[target]
        assert agent.process is not None
        system.freeze(agent.process)
        await asyncio.sleep(fault.hold_s)
        system.thaw(agent.process)
    elif kind is FaultKind.KILL_REGISTRY:
        reg = system.registries[target]
        assert reg.process is not None
        reg.process.kill()
        await asyncio.sleep(fault.hold_s)
        await system.restart_registry(target)
    elif kind is FaultKind.FREEZE_REGISTRY:
        reg = system.registries[target]
        assert reg.process is not None
        system.freeze(reg.process)
        await asyncio.sleep(fault.hold_s)
        system.thaw(reg.process)
    elif kind is FaultKind.RESTART_CONSUL:
        await system.consul.process.stop()
        await asyncio.sleep(fault.hold_s)
        system.consul.process.start()
        await system.consul.wait_ready()
    elif kind is FaultKind.WIPE_CONSUL:
        await system.wipe_consul()
        await asyncio.sleep(fault.hold_s)
    elif kind is FaultKind.RESTART_NACOS:
        await system.nacos.restart()
        await asyncio.sleep(fault.hold_s)
    elif kind is FaultKind.FLAP_GATEWAY:
        gateway = system.gateways[target]
        await gateway.close()
        await asyncio.sleep(fault.hold_s)
        await gateway.open()
    elif kind in (FaultKind.KILL_LEADER, FaultKind.FREEZE_LEADER):
        # Whichever agent of the standby group publishes now; the other must take
        # over and the old one come back as a standby (fenced if it was frozen).
        leader = await system.leader(target)
        assert leader.process is not None
        if kind is FaultKind.KILL_LEADER:
            leader.process.kill()
            await asyncio.sleep(fault.hold_s)
            leader.start()
        else:
            system.freeze(leader.process)
            await asyncio.sleep(fault.hold_s)
            system.thaw(leader.process)
    elif kind in (FaultKind.CLOCK_AHEAD_AGENT, FaultKind.CLOCK_BEHIND_AGENT):
        # The agent restarts on a host whose clock is a year off (before NTP fixes it),
        # runs the hold, and restarts again with the right time.
        offset = "+365d" if kind is FaultKind.CLOCK_AHEAD_AGENT else "-365d"
        await system.restart_agent(target, clock_offset=offset)
        await asyncio.sleep(fault.hold_s)
        await system.restart_agent(target)
    else:  # pragma: no cover - every kind is handled above
        raise AssertionError(kind)


_RESTARTS_AN_AGENT = (
    FaultKind.KILL_AGENT,
    FaultKind.KILL_LEADER,
    FaultKind.CLOCK_AHEAD_AGENT,
    FaultKind.CLOCK_BEHIND_AGENT,
)


def _dead_processes(system: NemesisSystem) -> list[str]:
    return [name for name, proc in system.processes().items() if not proc.alive()]


async def run_campaign(
    seed: int, faults: list[Fault], workdir: Path, churn_rate: float = 4.0
) -> list[FaultResult]:
    results: list[FaultResult] = []
    async with nemesis_system(workdir) as system:
        churn = Churn(system, random.Random(seed))
        churn.running.set()
        churner = asyncio.create_task(churn.run(churn_rate))
        try:
            await asyncio.sleep(5.0)  # some state in every source first
            churn.running.clear()
            first_s, problems = await converge(system, churn, CONVERGE_TIMEOUT_S)
            if problems:
                raise AssertionError(f"the system never converged before any fault: {problems}")
            log.info("system up and converged in %.1fs", first_s)
            churn.running.set()
            await asyncio.sleep(3.0)
            for fault in faults:
                log.info("fault %s", fault)
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample_during(system, churn, fault, stop))
                await inject(system, fault)
                if fault.kind in _RESTARTS_AN_AGENT:
                    await asyncio.sleep(3.0)  # let the restarted agent start publishing
                stop.set()
                wrong, total = await sampler
                churn.running.clear()
                converge_s, problems = await converge(system, churn, CONVERGE_TIMEOUT_S)
                dead = _dead_processes(system)
                problems += [f"process not serving: {name}" for name in dead]
                result = FaultResult(
                    fault=str(fault),
                    converge_s=round(converge_s, 2),
                    wrong_samples=wrong,
                    samples=total,
                    wrong_s=float(wrong),  # one sample per second per name
                    ok=not problems,
                    problems=problems[:20],
                )
                results.append(result)
                log.info("  -> %s", json.dumps(asdict(result)))
                if problems:
                    break
                churn.running.set()
                await asyncio.sleep(2.0)
            else:
                # A poisoned cluster may look converged until its next change: churn
                # once more after the last fault, then check.
                await asyncio.sleep(6.0)
                churn.running.clear()
                converge_s, problems = await converge(system, churn, CONVERGE_TIMEOUT_S)
                results.append(
                    FaultResult(
                        "final-churn", round(converge_s, 2), 0, 0, 0.0, not problems, problems[:20]
                    )
                )
        finally:
            churner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await churner
        log.info(
            "churn: %d writes, %d failed while a source was down", churn.writes, churn.failed_writes
        )
    return results


def summarise(results: list[FaultResult]) -> str:
    times = [r.converge_s for r in results if r.ok]
    failed = sum(1 for r in results if not r.ok)
    wrong = sum(r.wrong_samples for r in results)
    samples = sum(r.samples for r in results)
    return (
        f"faults={len(results)} failed={failed} converge_p50_s={percentile(times, 50):.2f} "
        f"converge_p99_s={percentile(times, 99):.2f} wrong_answer_samples={wrong} "
        f"answer_samples={samples}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.nemesis", description=__doc__)
    parser.add_argument("--seed", type=int, action="append", help="one campaign per seed")
    parser.add_argument("--seeds", type=int, default=0, help="this many seeds from 1")
    parser.add_argument("--faults", type=int, default=6, help="faults per seed")
    parser.add_argument("--minutes", type=float, default=0.0, help="repeat seeds until then")
    parser.add_argument("--kinds", default="", help="comma-separated fault kinds (default all)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--report", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    kinds = [FaultKind(k) for k in args.kinds.split(",") if k] or list(FaultKind)
    if not LIBFAKETIME.exists():
        kinds = [k for k in kinds if "clock" not in k.value]
        log.warning("libfaketime missing (apt-get install faketime): clock faults left out")
    seeds = list(args.seed or []) + list(range(1, args.seeds + 1))
    seeds = seeds or [1]
    deadline = time.monotonic() + args.minutes * 60
    all_results: list[FaultResult] = []
    index = 0
    while index < len(seeds) or (args.minutes and time.monotonic() < deadline):
        seed = seeds[index] if index < len(seeds) else seeds[-1] + index - len(seeds) + 1
        index += 1
        faults = plan(seed, args.faults, kinds)
        print(f"seed {seed}: " + ", ".join(map(str, faults)), flush=True)
        with tempfile.TemporaryDirectory(prefix=f"nemesis-{seed}-") as tmp:
            workdir = args.workdir / f"seed-{seed}" if args.workdir else Path(tmp)
            results = asyncio.run(run_campaign(seed, faults, workdir))
        all_results += results
        if args.report:
            with args.report.open("a") as out:
                for r in results:
                    out.write(json.dumps({"seed": seed, **asdict(r)}) + "\n")
        if any(not r.ok for r in results):
            print(f"seed {seed} FAILED: replay with ./run nemesis --seed {seed}", flush=True)
            print(summarise(all_results), flush=True)
            return 1
    print(summarise(all_results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
