"""Source change -> DNS answer latency, Consul and Nacos, on the whole system on real peers.

What it measures: a real nats-server, Consul (cluster ``east``) and Nacos
(cluster ``west``), an edge agent for each and one registry with its DNS
server (``harness.system.full_system``, run in a child process so
the bench's 1 ms DNS polling does not share the system's event loop). Each
source gets ``--changes`` changes at a steady pace, each one on a service that
exists only in that source's cluster, and for each change the time from the
source API call returning to the DNS answer of ``<svc>.svc.syncmesh.internal``
reflecting it (UDP, polled every millisecond, 10 s timeout = a failure):

- Consul, per service ``cp-<i>``: register (NXDOMAIN -> A 127.0.0.2),
  maintenance on (-> NOERROR without A), deregister (-> NXDOMAIN);
- Nacos, per persistent instance of ``np-<i>`` (the west gateway's own
  address, so Nacos's TCP health check passes): register (-> A 127.0.0.3),
  ``enabled=false`` (-> NOERROR without A), ``enabled=true`` (-> A),
  deregister (-> NOERROR without A). Nacos keeps an emptied service (and
  pushes disabled instances as nothing), so "disabled" and "deregistered"
  look the same; re-enabling in between is what makes every change visible.

Reference, for the same changes: the source's own change notification, a
Consul blocking query on ``/v1/health/service/<svc>`` parked in Consul before
the change is made (so it measures a waiting watcher's wake-up), and a
nacos-sdk-python v2 push (subscribed before the change). Also reported: when the agent's state reached NATS, which splits
the latency into "source -> NATS" (agent watch, fetch, publish) and
"NATS -> DNS" (registry apply, DNS invalidation, one poll).

    .venv/bin/python bench/propagation.py [--changes 300] [--pace-ms 200,500]

The last line is::

    consul_p50_ms=… consul_p99_ms=… nacos_p50_ms=… nacos_p99_ms=… consul_ref_p50_ms=…
    nacos_ref_p50_ms=… consul_ratio_p50_vs_ref=… nacos_ratio_p50_vs_ref=… failures=…

(one line); ``failures`` counts changes whose DNS answer did not follow
within the timeout, whose API call failed, or that the time budget cut off.
A failed change counts as ``inf`` in every percentile (it is not dropped), so
more than 1 % failures make p99 ``inf``; the same for the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.propagation_io import (  # noqa: E402
    ConsulDriver,
    DnsProbe,
    Driver,
    NacosDriver,
    NacosPushWatch,
    NatsTap,
    Shape,
    Step,
)

DNS_SUFFIX = "svc.syncmesh.internal"
READY_MARK = "PROPAGATION_SYSTEM "
THIS_SCRIPT = str(Path(__file__).resolve())
GOAL_CONSUL_P99_MS = 250.0
GOAL_NACOS_P99_MS = 1500.0
CONSUL_CYCLE: tuple[tuple[str, Shape], ...] = (
    ("register", "address"),
    ("critical", "nodata"),
    ("deregister", "nxdomain"),
)
NACOS_CYCLE: tuple[tuple[str, Shape], ...] = (
    ("register", "address"),
    ("disable", "nodata"),
    ("enable", "address"),
    ("deregister", "nodata"),
)


# -- pure part: plan, pacing, statistics -----------------------------------------------------


def plan(prefix: str, cycle: Sequence[tuple[str, Shape]], changes: int) -> list[Step]:
    """``changes`` steps; each service runs through ``cycle`` once, then the next service starts."""
    return [Step(f"{prefix}-{k // len(cycle)}", *cycle[k % len(cycle)]) for k in range(changes)]


def next_start(slot_start: float, pace_s: float, observed_at: float) -> float:
    """The next pace slot, or once the previous change was observed, whichever is later."""
    return max(slot_start + pace_s, observed_at)


@dataclass
class Outcome:
    step: Step
    dns_ms: float | None = None
    ref_ms: float | None = None
    nats_ms: float | None = None
    # How long the source API call itself took (the clock starts when it returns).
    api_ms: float | None = None
    error: str = ""


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) and not math.isnan(b) else math.nan


def failed(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.dns_ms is None]


def values(outcomes: Sequence[Outcome], what: Callable[[Outcome], float | None]) -> list[float]:
    """The figures of the changes that produced one (diagnostics: splits, API times)."""
    return [v for v in map(what, outcomes) if v is not None]


def latencies(outcomes: Sequence[Outcome], what: Callable[[Outcome], float | None]) -> list[float]:
    """One figure per change, a failed one (timeout, failed call, cut by the budget) as
    ``inf``: percentiles count failures instead of dropping them."""
    return [math.inf if v is None else v for v in map(what, outcomes)]


def spread(label: str, samples: Sequence[float]) -> str:
    if not samples:
        return f"{label} n=0"
    failed_n = sum(1 for v in samples if math.isinf(v))
    return (
        f"{label} n={len(samples)} min={min(samples):.1f} p50={percentile(samples, 50):.1f} "
        f"p90={percentile(samples, 90):.1f} p99={percentile(samples, 99):.1f} "
        f"max={max(samples):.1f} ms" + (f" ({failed_n} failed = inf)" if failed_n else "")
    )


def summary(source: str, outcomes: Sequence[Outcome]) -> list[str]:
    ok = [o for o in outcomes if o.dns_ms is not None]
    lines = [
        f"{source}: {spread('source->DNS', latencies(outcomes, lambda o: o.dns_ms))}",
        f"{source}: {spread('reference', latencies(outcomes, lambda o: o.ref_ms))}",
        f"{source}: {spread('source->NATS', values(ok, lambda o: o.nats_ms))}",
        f"{source}: {spread('API call', values(outcomes, lambda o: o.api_ms))}",
        f"{source}: {spread('NATS->DNS', [o.dns_ms - o.nats_ms for o in ok if o.dns_ms is not None and o.nats_ms is not None])}",
    ]
    for kind in dict.fromkeys(o.step.kind for o in outcomes):
        of_kind = [o for o in outcomes if o.step.kind == kind]
        lines.append(
            f"{source}: {spread(kind + ' source->DNS', latencies(of_kind, lambda o: o.dns_ms))}"
            f" | {spread('ref', latencies(of_kind, lambda o: o.ref_ms))}"
        )
    slow = sorted(ok, key=lambda o: o.dns_ms or 0.0, reverse=True)[:5]
    lines.append(
        f"{source}: slowest "
        + ", ".join(
            f"{o.step.service}/{o.step.kind} {o.dns_ms:.0f} ms (NATS at {o.nats_ms or math.nan:.0f}, ref {o.ref_ms or math.nan:.0f})"
            for o in slow
        )
    )
    refs_missing = sum(1 for o in outcomes if o.ref_ms is None)
    unseen = sum(1 for o in ok if o.nats_ms is None)
    lines.append(
        f"{source}: failures={len(failed(outcomes))} reference_timeouts={refs_missing} "
        f"reflected_without_matching_nats_state={unseen}"
    )
    return lines


def last_line(consul: Sequence[Outcome], nacos: Sequence[Outcome]) -> str:
    fields: dict[str, str] = {}
    refs: dict[str, float] = {}
    for source, outcomes in (("consul", consul), ("nacos", nacos)):
        dns_ms = latencies(outcomes, lambda o: o.dns_ms)
        fields[f"{source}_p50_ms"] = f"{percentile(dns_ms, 50):.1f}"
        fields[f"{source}_p99_ms"] = f"{percentile(dns_ms, 99):.1f}"
        refs[source] = percentile(latencies(outcomes, lambda o: o.ref_ms), 50)
    for source in ("consul", "nacos"):
        fields[f"{source}_ref_p50_ms"] = f"{refs[source]:.1f}"
    for source, outcomes in (("consul", consul), ("nacos", nacos)):
        p50 = percentile(latencies(outcomes, lambda o: o.dns_ms), 50)
        fields[f"{source}_ratio_p50_vs_ref"] = f"{ratio(p50, refs[source]):.2f}"
    fields["failures"] = str(len(failed(consul)) + len(failed(nacos)))
    return " ".join(f"{k}={v}" for k, v in fields.items())


# -- runner ----------------------------------------------------------------------------------


@dataclass
class Settings:
    changes: int
    pace_s: dict[str, float]
    timeout_s: float
    budget_s: float
    dump: str | None = None
    # Diagnostics: change one source only (the other one's numbers are then nan).
    only: str | None = None


async def measure(
    driver: Driver, probe: DnsProbe, tap: NatsTap, step: Step, timeout_s: float
) -> tuple[Outcome, float]:
    loop = asyncio.get_running_loop()
    outcome = Outcome(step)
    try:
        reference = await driver.arm(step)
        called = loop.time()
        await driver.apply(step)
    except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
        outcome.error = f"API call failed: {type(exc).__name__}: {exc}"
        return outcome, loop.time()
    t0 = loop.time()
    outcome.api_ms = (t0 - called) * 1000
    deadline = t0 + timeout_s
    name = f"{step.service}.{DNS_SUFFIX}"
    dns_at, ref_at = await asyncio.gather(
        probe.wait_for(name, step.dns, driver.gateway, deadline), reference(deadline)
    )
    if dns_at is not None:
        outcome.dns_ms = (dns_at - t0) * 1000
    else:
        answer = await probe.ask(name)
        outcome.error = f"DNS still {answer} after {timeout_s:.0f} s (wanted {step.dns})"
    if ref_at is not None:
        outcome.ref_ms = (ref_at - t0) * 1000
    nats_at = tap.first(driver.cluster, step.service, step.dns, called)
    if nats_at is not None:
        outcome.nats_ms = (nats_at - t0) * 1000
    elif dns_at is not None:
        seen = [
            (round((at - t0) * 1000), shape)
            for at, shape in tap.seen.get((driver.cluster, step.service), ())
        ]
        print(
            f"{driver.source}: note: {step.service} {step.kind} reached DNS without a matching "
            f"state on NATS after the call; NATS states (ms from the call, shape): {seen}",
            flush=True,
        )
    return outcome, loop.time()


async def run_source(
    driver: Driver,
    probe: DnsProbe,
    tap: NatsTap,
    steps: list[Step],
    settings: Settings,
    began: float,
) -> list[Outcome]:
    loop = asyncio.get_running_loop()
    pace = settings.pace_s[driver.source]
    outcomes: list[Outcome] = []
    every = max(1, len(steps) // 10)
    slot = loop.time()
    for number, step in enumerate(steps, 1):
        await asyncio.sleep(max(0.0, slot - loop.time()))
        if loop.time() - began > settings.budget_s:
            cut = [Outcome(s, error="not run: time budget spent") for s in steps[number - 1 :]]
            print(
                f"{driver.source}: time budget of {settings.budget_s:.0f} s spent; "
                f"{len(cut)} changes not run",
                flush=True,
            )
            return outcomes + cut
        slot_start = loop.time()
        outcome, observed = await measure(driver, probe, tap, step, settings.timeout_s)
        outcomes.append(outcome)
        if outcome.error:
            print(
                f"{driver.source}: FAILED {step.service} {step.kind}: {outcome.error}", flush=True
            )
        if number % every == 0 or number == len(steps):
            dns_ms = latencies(outcomes, lambda o: o.dns_ms)
            print(
                f"[{loop.time() - began:6.1f}s] {driver.source} {number}/{len(steps)} "
                f"p50={percentile(dns_ms, 50):.1f} p99={percentile(dns_ms, 99):.1f} ms "
                f"ref_p50={percentile(latencies(outcomes, lambda o: o.ref_ms), 50):.1f} ms "
                f"failures={len(failed(outcomes))}",
                flush=True,
            )
        slot = next_start(slot_start, pace, observed)
    return outcomes


async def bench(
    info: dict[str, Any], settings: Settings, workdir: Path
) -> tuple[list[Outcome], list[Outcome]]:
    loop = asyncio.get_running_loop()
    consul_steps = plan("cp", CONSUL_CYCLE, settings.changes if settings.only != "nacos" else 0)
    nacos_steps = plan("np", NACOS_CYCLE, settings.changes if settings.only != "consul" else 0)
    tap = NatsTap()
    await tap.start(info["nats_url"])
    pushes = NacosPushWatch(info["nacos_addr"], workdir / "bench-sdk")
    probes = [DnsProbe(("127.0.0.1", info["dns_port"])) for _ in range(2)]
    try:
        await pushes.start(dict.fromkeys(s.service for s in nacos_steps))
        for probe in probes:
            await probe.open()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            consul = ConsulDriver(http, info["consul_url"])
            nacos = NacosDriver(http, info["nacos_addr"], info["west_port"], pushes)
            began = loop.time()
            print(
                f"running {len(consul_steps)} Consul and {len(nacos_steps)} Nacos changes "
                f"(pace {settings.pace_s['consul'] * 1000:.0f} / {settings.pace_s['nacos'] * 1000:.0f} ms)",
                flush=True,
            )
            consul_out, nacos_out = await asyncio.gather(
                run_source(consul, probes[0], tap, consul_steps, settings, began),
                run_source(nacos, probes[1], tap, nacos_steps, settings, began),
            )
            queries = sum(p.queries for p in probes)
            print(
                f"done in {loop.time() - began:.1f} s; {queries} DNS queries, "
                f"{sum(p.lost for p in probes)} unanswered; NATS tap: {tap.received} states, "
                f"{tap.undecodable} undecodable, {tap.errors} connection errors",
                flush=True,
            )
            return consul_out, nacos_out
    finally:
        for probe in probes:
            probe.close()
        await pushes.stop()
        await tap.stop()


# -- the system, in a child process ----------------------------------------------------------


async def serve_system(workdir: Path) -> None:
    """Child: start the whole system, print where it listens, run until stdin closes."""
    import logging

    from harness.system import full_system

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    loop = asyncio.get_running_loop()
    async with full_system(workdir) as s:
        info = {
            "dns_port": s.dns_port,
            "consul_url": s.consul.http_url,
            "nacos_addr": s.nacos.server_addr,
            "nats_url": s.nats.url,
            "west_port": s.west_gateway.port,
            "nacos_version": s.nacos.version,
        }
        print(READY_MARK + json.dumps(info), flush=True)
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        await stdin.read()


async def _forward(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        sys.stderr.write("system: " + line.decode(errors="replace"))


@contextlib.asynccontextmanager
async def system_process(workdir: Path) -> Any:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        THIS_SCRIPT,
        "--serve-system",
        str(workdir),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    forward: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(240):
            while True:
                line = (await child.stdout.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError(f"the system process exited ({await child.wait()})")
                if line.startswith(READY_MARK):
                    break
                sys.stderr.write("system: " + line)
        forward = asyncio.create_task(_forward(child.stdout))
        yield json.loads(line[len(READY_MARK) :])
    finally:
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 60)
        except TimeoutError:
            child.terminate()
            await child.wait()
        if forward is not None:
            await forward


async def main(settings: Settings) -> int:
    with tempfile.TemporaryDirectory(prefix="syncmesh-propagation-") as tmp:
        workdir = Path(tmp)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with system_process(workdir / "system") as info:
            print(
                f"system up in {loop.time() - started:.1f} s (Nacos {info['nacos_version']}, "
                f"DNS on 127.0.0.1:{info['dns_port']})",
                flush=True,
            )
            consul, nacos = await bench(info, settings, workdir)
    if settings.dump:
        with open(settings.dump, "w") as out:  # noqa: ASYNC230 - after the measurement
            for source, outcomes in (("consul", consul), ("nacos", nacos)):
                for o in outcomes:
                    out.write(
                        json.dumps(
                            {
                                "source": source,
                                **o.step._asdict(),
                                "dns_ms": o.dns_ms,
                                "ref_ms": o.ref_ms,
                                "nats_ms": o.nats_ms,
                                "api_ms": o.api_ms,
                                "error": o.error,
                            }
                        )
                        + "\n"
                    )
    for line in summary("consul", consul) + summary("nacos", nacos):
        print(line)
    for source, outcomes, goal in (
        ("consul", consul, GOAL_CONSUL_P99_MS),
        ("nacos", nacos, GOAL_NACOS_P99_MS),
    ):
        p99 = percentile(latencies(outcomes, lambda o: o.dns_ms), 99)
        ref_p99 = percentile(latencies(outcomes, lambda o: o.ref_ms), 99)
        verdict = "n/a" if math.isnan(p99) else "met" if p99 <= goal else "MISSED"
        print(
            f"goal {source} p99 <= {goal:.0f} ms: {verdict} ({p99:.1f} ms); "
            f"{source}_ratio_p99_vs_ref={ratio(p99, ref_p99):.2f}"
        )
    print(last_line(consul, nacos), flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=300, help="changes per source")
    parser.add_argument(
        "--pace-ms",
        default="200,500",
        help="least time between two changes: one value, or CONSUL,NACOS",
    )
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per change, else a failure")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="changes not started within this time are failures",
    )
    parser.add_argument("--dump", metavar="PATH", help="write every change's outcome as JSON lines")
    parser.add_argument(
        "--only",
        choices=("consul", "nacos"),
        help="diagnostics: change one source only, to see the other's influence",
    )
    parser.add_argument("--serve-system", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.changes < 1:
        parser.error("--changes must be at least 1")
    pace = [float(p) / 1000 for p in str(args.pace_ms).split(",")]
    if len(pace) not in (1, 2) or min(pace) < 0:
        parser.error("--pace-ms: one value or CONSUL,NACOS, in milliseconds")
    args.pace = {"consul": pace[0], "nacos": pace[-1]}
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve_system:
        from dns_server.io.server import run

        run(serve_system(Path(arguments.serve_system)))
        sys.exit(0)
    sys.exit(
        asyncio.run(
            main(
                Settings(
                    arguments.changes,
                    arguments.pace,
                    arguments.timeout_s,
                    arguments.budget_s,
                    arguments.dump,
                    arguments.only,
                )
            )
        )
    )
