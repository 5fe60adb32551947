"""Scale and cost of one registry replica, swept over the size of the inventory.

For each size (default 1,000, 10,000 and 100,000 service states: 100 clusters
x size/100 services, 3-10 instances each, every service name in two clusters)
one run against a real nats-server, with the registry in its own process
(``python -m syncmesh_app registry --config FILE``), measures:

Registry
- ``ready_s``: spawning the process until ``/readyz`` answers 200 (imports,
  NATS connect, reading the whole stream, first probe of every gateway, DNS up);
- ``states_per_s``: states / the registry's own ``syncmesh_registry_catchup_seconds``,
  next to a stock nats-py ordered consumer that only counts the same messages
  (``ref_states_per_s``; ``ingest_ratio`` = registry / reference);
- ``rss_mb`` after ready and ``rss_mb_per_1k`` services;
- ``cpu_pct_per_1k``: CPU of the registry process (utime+stime from /proc) while
  ``--churn`` changes/s are published (one instance of a random service flips
  health), minus its idle CPU, per 1,000 changes/s, in % of one core.

DNS (the registry's own server, dnsperf on one core, NSD 4 serving a static
zone of the very answers the registry gave, one server process):
- max QPS (no ``-Q``) and p99 at ``--latency-qps`` offered (lost queries count
  as the 2 s timeout) of a query mix over *all* names with Zipf popularity
  (60 % A, 10 % each AAAA/SRV/TXT, 5 % pinned ``<cluster>.<svc>...``, 5 % unknown);
- the same for syncmesh while ``--churn`` changes/s arrive;
- the answer-cache hit rate over each run (registry ``/metrics``);
- the same mix with every name in random case (0x20, as Unbound's
  ``use-caps-for-id`` sends), syncmesh and NSD;
- memory with many clients: queries carrying EDNS Client Subnet from 10,000
  /24s inside the clusters' client CIDRs, then 10,000 outside any; RSS before
  and after each pass.

Every figure is measured in ``--rounds`` rounds; the spread (min/median/max)
is printed and the median counts. Results go to ``bench/results/scale.json``
and the plots to ``docs/bench-scale-*.png``.

    .venv/bin/python bench/scale.py [--sizes 1000,10000,100000] [--rounds 3] [--seconds 4]
    .venv/bin/python bench/scale.py --plot-only bench/results/scale.json

The last line is ``name=value`` figures of the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    CLIENT,
    ZONE,
    DnsRun,
    ProcStats,
    Zipf,
    ask_all,
    dnsperf,
    ensure_tools,
    free_udp_tcp_port,
    gateway_listeners,
    hit_rate,
    load_average,
    median,
    metric_sum,
    mixed_case,
    reference_consumer,
    say,
    scrape,
    spread,
    start_nsd,
    stop,
    wait_answering,
    wire_query,
    write_binary_queries,
    zone_of,
)
from bench.scale_inventory import Churn, Inventory, publish_inventory  # noqa: E402
from harness.nats_peer import nats_server  # noqa: E402
from syncmesh import subjects  # noqa: E402
from syncmesh_app.embedded.process import dying_with_parent, free_port  # noqa: E402
from syncmesh_io.nats_connection import ensure_stream  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "scale.json"
GOAL_READY_S = 5.0
EVERYTHING = 'syncmesh_registry_view_changes_total{scope="everything"}'


# -- the registry process --------------------------------------------------------------------


@dataclass
class Registry:
    process: asyncio.subprocess.Process
    admin_port: int
    dns_port: int
    spawned_at: float
    log: Path

    @property
    def stats(self) -> ProcStats:
        return ProcStats(self.process.pid)

    @property
    def metrics_url(self) -> str:
        return f"http://{CLIENT}:{self.admin_port}/metrics"

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float = 300) -> float:
        url = f"http://{CLIENT}:{self.admin_port}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"registry exited: {self.log.read_text()[-3000:]}")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return time.monotonic() - self.spawned_at
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
        raise RuntimeError(f"registry not ready after {timeout}s: {self.log.read_text()[-3000:]}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def spawn_registry(workdir: Path, nats_url: str, name: str, extra: str = "") -> Registry:
    """``extra``: more TOML appended to the config (diagnostics; the default is none)."""
    admin_port, dns_port = free_port(), free_udp_tcp_port()
    config = workdir / f"{name}.toml"
    config.write_text(
        f'replica = "bench"\nadmin_address = "{CLIENT}"\nadmin_port = {admin_port}\n'
        f'[locality]\nregion = "r0"\nzone = "r0-z0"\n'
        f'[nats]\nservers = ["{nats_url}"]\n'
        f'[dns]\naddress = "{CLIENT}"\nport = {dns_port}\nzone = "{ZONE}"\n' + extra
    )
    log = workdir / f"{name}.log"
    spawned = time.monotonic()
    argv, preexec = dying_with_parent(
        [sys.executable, "-m", "syncmesh_app", "--log-level", "WARNING", "registry"]
        + ["--config", str(config)]
    )
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=preexec,  # noqa: PLW1509 - only without setpriv
    )
    return Registry(process, admin_port, dns_port, spawned, log)


# -- queries ---------------------------------------------------------------------------------


def question_stream(
    inv: Inventory, count: int, zipf_s: float, seed: int
) -> Iterator[tuple[str, str]]:
    """``count`` questions; names drawn with Zipf popularity (a random order of all names)."""
    rng = random.Random(seed)
    names = inv.names()
    rng.shuffle(names)
    zipf = Zipf(len(names), zipf_s, rng)
    for _ in range(count):
        namespace, service, pair = names[zipf.draw()]
        base = f"{service}.{namespace}.svc.{ZONE}"
        roll = rng.random()
        if roll < 0.60:
            yield base, "A"
        elif roll < 0.70:
            yield base, "AAAA"
        elif roll < 0.80:
            yield base, "SRV"
        elif roll < 0.90:
            yield base, "TXT"
        elif roll < 0.95:
            yield f"{inv.cluster(pair[rng.randrange(2)])}.{base}", "A"
        else:
            yield f"missing-{base}", "A"


@dataclass
class QueryFiles:
    plain: Path
    mixed: Path
    ecs_inside: Path
    ecs_outside: Path
    distinct: list[tuple[str, str]]


def write_query_files(workdir: Path, inv: Inventory, count: int, zipf_s: float) -> QueryFiles:
    asked = list(question_stream(inv, count, zipf_s, seed=11))
    rng = random.Random(12)
    files = QueryFiles(
        workdir / "plain.bin",
        workdir / "mixed.bin",
        workdir / "ecs-inside.bin",
        workdir / "ecs-outside.bin",
        sorted(set(asked)),
    )
    write_binary_queries(files.plain, (wire_query(n, t) for n, t in asked))
    write_binary_queries(files.mixed, (wire_query(mixed_case(n, rng), t) for n, t in asked))
    # 10,000 /24s inside the clusters' client CIDRs (10.<c>.<x>.0/24), then 10,000 outside any.
    per_subnet = 10
    inside = [(f"10.{k // 100}.{k % 100}.0", 24) for k in range(10_000)]
    outside = [(f"100.{64 + k // 256}.{k % 256}.0", 24) for k in range(10_000)]
    for path, subnets in ((files.ecs_inside, inside), (files.ecs_outside, outside)):
        write_binary_queries(
            path,
            (
                wire_query(*asked[(k * 7919 + j) % len(asked)], ecs=subnets[k])
                for j in range(per_subnet)
                for k in range(len(subnets))
            ),
        )
    return files


# -- one size --------------------------------------------------------------------------------


@dataclass
class Settings:
    rounds: int
    seconds: int
    latency_qps: int
    churn: int
    churn_s: float
    queries: int
    zipf_s: float
    registry_toml: str = ""


async def dns_round(
    http: aiohttp.ClientSession,
    reg: Registry,
    port: int,
    datafile: Path,
    s: Settings,
    label: str,
    out: dict[str, list[float]],
) -> None:
    """Max qps and p99 at the fixed load for one server; hit rate when it is the registry."""
    before = await scrape(http, reg.metrics_url) if port == reg.dns_port else ""
    peak: DnsRun = await asyncio.to_thread(dnsperf, port, datafile, s.seconds)
    fixed: DnsRun = await asyncio.to_thread(dnsperf, port, datafile, s.seconds, s.latency_qps, True)
    if before:
        after = await scrape(http, reg.metrics_url)
        out.setdefault(f"{label}_hit_rate", []).append(hit_rate(before, after))
        flushes = metric_sum(after, EVERYTHING) - metric_sum(before, EVERYTHING)
        out.setdefault(f"{label}_flushes_per_s", []).append(flushes / (2 * s.seconds))
    out.setdefault(f"{label}_qps", []).append(peak.qps)
    out.setdefault(f"{label}_p99_ms", []).append(fixed.p99_ms)
    out.setdefault(f"{label}_fixed_qps", []).append(fixed.qps)
    out.setdefault(f"{label}_lost_pct", []).append(fixed.lost_pct)
    say(
        f"  {label}: max {peak.qps:,.0f} qps (lost {peak.lost_pct:.2f}%); at {s.latency_qps:,} "
        f"offered: {fixed.qps:,.0f} qps p99 {fixed.p99_ms:.3f} ms lost {fixed.lost_pct:.2f}%"
        + (
            f" hit rate {out[f'{label}_hit_rate'][-1]:.3f}, whole-cache invalidations "
            f"{out[f'{label}_flushes_per_s'][-1]:.1f}/s"
            if before
            else ""
        )
    )


async def run_size(size: int, s: Settings, workdir: Path) -> dict[str, Any]:
    inv = Inventory(size)
    result: dict[str, Any] = {"size": inv.clusters * inv.per_cluster, "clusters": inv.clusters}
    rounds: dict[str, list[float]] = {}
    say(
        f"== size {result['size']:,} ({inv.clusters} clusters x {inv.per_cluster} services)"
        f", load {load_average():.2f}"
    )
    async with (
        nats_server(workdir=workdir / "nats") as peer,
        gateway_listeners(inv.gateway_addresses()) as gateway_port,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        nc = await nats.connect(peer.url)
        js = nc.jetstream()
        await ensure_stream(js)
        t0 = time.monotonic()
        stream_bytes = await publish_inventory(js, nc, inv, gateway_port)
        expected = inv.clusters * (2 + inv.per_cluster)
        say(
            f"  published {expected:,} messages ({stream_bytes / 1e6:.1f} MB) in "
            f"{time.monotonic() - t0:.1f}s"
        )
        result["stream_mb"] = stream_bytes / 1e6

        # Ingest: reference and registry, interleaved; the last registry stays up.
        reg: Registry | None = None
        for r in range(s.rounds):
            ref_s = await reference_consumer(peer.url, expected)
            rounds.setdefault("ref_states_per_s", []).append(expected / ref_s)
            if reg is not None:
                await reg.stop()
            reg = await spawn_registry(workdir, peer.url, f"registry-{r}", s.registry_toml)
            ready_s = await reg.wait_ready(http)
            text = await scrape(http, reg.metrics_url)
            catchup = metric_sum(text, "syncmesh_registry_catchup_seconds")
            services = metric_sum(text, "syncmesh_registry_services")
            if int(services) != result["size"]:
                raise RuntimeError(f"registry holds {services} services, expected {result['size']}")
            rounds.setdefault("ready_s", []).append(ready_s)
            rounds.setdefault("catchup_s", []).append(catchup)
            rounds.setdefault("states_per_s", []).append(expected / catchup)
            say(
                f"  round {r + 1}: ready {ready_s:.2f}s after spawn, caught up in {catchup:.2f}s "
                f"({expected / catchup:,.0f}/s); stock ordered consumer {ref_s:.2f}s "
                f"({expected / ref_s:,.0f}/s)"
            )
        assert reg is not None
        result["instances"] = metric_sum(text, "syncmesh_registry_instances")
        stats = reg.stats
        await asyncio.sleep(1.0)
        result["rss_mb"] = stats.rss_mb()
        result["hwm_mb"] = stats.hwm_mb()
        result["threads"] = stats.threads()

        # CPU: idle window, then churn window, per round.
        for r in range(s.rounds):
            before = await scrape(http, reg.metrics_url)
            c0, t_0 = stats.cpu_s(), time.monotonic()
            await asyncio.sleep(s.churn_s / 2)
            idle = (stats.cpu_s() - c0) / (time.monotonic() - t_0)
            flushes = metric_sum(await scrape(http, reg.metrics_url), EVERYTHING) - metric_sum(
                before, EVERYTHING
            )
            rounds.setdefault("idle_flushes_per_s", []).append(flushes / (s.churn_s / 2))
            churn = Churn(nc, inv, s.churn, seed=100 + r)
            c0, t_0 = stats.cpu_s(), time.monotonic()
            churn.start()
            await asyncio.sleep(s.churn_s)
            await churn.stop()
            busy = (stats.cpu_s() - c0) / (time.monotonic() - t_0)
            rate = churn.sent / (time.monotonic() - t_0)
            per_1k = (busy - idle) * 100 / (rate / 1000)
            rounds.setdefault("idle_cpu_pct", []).append(idle * 100)
            rounds.setdefault("churn_cpu_pct", []).append(busy * 100)
            rounds.setdefault("cpu_pct_per_1k", []).append(per_1k)
            say(
                f"  churn round {r + 1}: {rate:,.0f} changes/s, CPU {busy * 100:.1f}% "
                f"(idle {idle * 100:.1f}%, whole-cache invalidations while idle "
                f"{rounds['idle_flushes_per_s'][-1]:.1f}/s) -> {per_1k:.1f}% of a core "
                "per 1,000 changes/s"
            )
        info = await js.stream_info(subjects.STREAM)
        await asyncio.sleep(0.5)
        lag = info.state.last_seq - metric_sum(
            await scrape(http, reg.metrics_url), "syncmesh_registry_stream_sequence"
        )
        result["churn_lag_msgs"] = lag

        # DNS: query files, NSD with the registry's own answers.
        t0 = time.monotonic()
        files = write_query_files(workdir, inv, s.queries, s.zipf_s)
        apex = [(ZONE, "SOA"), (ZONE, "NS")]
        replies = await ask_all(reg.dns_port, apex + files.distinct)
        zone_text, records = zone_of(replies)
        nsd_port = free_udp_tcp_port()
        nsd = start_nsd(workdir / "nsd", nsd_port, zone_text)
        try:
            await asyncio.to_thread(wait_answering, nsd_port, 300)
            names = len({n for n, _ in files.distinct})
            result["dns_names"] = names
            result["dns_questions"] = len(files.distinct)
            result["zone_records"] = records
            say(
                f"  {s.queries:,} queries over {names:,} names ({len(files.distinct):,} distinct "
                f"questions); NSD zone {records:,} records; ready in {time.monotonic() - t0:.1f}s"
            )
            # Warm-up: answers are rendered on first miss.
            for port in (reg.dns_port, nsd_port):
                await asyncio.to_thread(dnsperf, port, files.plain, 2)
            for r in range(s.rounds):
                say(f" dns round {r + 1} (load {load_average():.2f})")
                await dns_round(http, reg, reg.dns_port, files.plain, s, "syncmesh", rounds)
                await dns_round(http, reg, nsd_port, files.plain, s, "nsd", rounds)
                churn = Churn(nc, inv, s.churn, seed=200 + r)
                churn.start()
                try:
                    await dns_round(http, reg, reg.dns_port, files.plain, s, "churn", rounds)
                finally:
                    await churn.stop()
                await dns_round(http, reg, reg.dns_port, files.mixed, s, "syncmesh_0x20", rounds)
                await dns_round(http, reg, nsd_port, files.mixed, s, "nsd_0x20", rounds)
        finally:
            stop(nsd)

        # Memory with many clients (ECS subnets).
        await asyncio.sleep(1.0)
        result["ecs_rss_before_mb"] = stats.rss_mb()
        text = await scrape(http, reg.metrics_url)
        result["ecs_cache_entries_before"] = metric_sum(text, "syncmesh_dns_cache_entries")
        for label, path in (("inside", files.ecs_inside), ("outside", files.ecs_outside)):
            run = await asyncio.to_thread(dnsperf, reg.dns_port, path, 120, 0, False, 2.0, True)
            await asyncio.sleep(0.5)
            result[f"ecs_rss_after_{label}_mb"] = stats.rss_mb()
            text = await scrape(http, reg.metrics_url)
            result[f"ecs_cache_entries_after_{label}"] = metric_sum(
                text, "syncmesh_dns_cache_entries"
            )
            say(
                f"  ECS {label}: 10,000 /24 subnets, {run.sent:,} queries at {run.qps:,.0f} qps; "
                f"RSS {result[f'ecs_rss_after_{label}_mb']:.1f} MB, cache entries "
                f"{result[f'ecs_cache_entries_after_{label}']:.0f}"
            )
        result["rss_after_dns_mb"] = stats.rss_mb()
        text = await scrape(http, reg.metrics_url)
        result["gc_longest_pause_ms"] = 1000 * metric_sum(text, "syncmesh_gc_longest_pause_seconds")
        result["gc_full_collections"] = metric_sum(
            text, "syncmesh_gc_pause_seconds_count", 'generation="2"'
        )
        result["gc_pause_total_s"] = metric_sum(text, "syncmesh_gc_pause_seconds_sum")
        say(
            f"  GC: longest pause {result['gc_longest_pause_ms']:.1f} ms, "
            f"{result['gc_full_collections']:.0f} full collections, "
            f"{result['gc_pause_total_s']:.2f} s paused in all"
        )
        await reg.stop()
        await nc.close()
    result["rounds"] = rounds
    for key, values in rounds.items():
        result[key] = median(values)
    result["rss_mb_per_1k"] = result["rss_mb"] / (result["size"] / 1000)
    result["ingest_ratio"] = result["states_per_s"] / result["ref_states_per_s"]
    result["qps_ratio_vs_nsd"] = result["syncmesh_qps"] / result["nsd_qps"]
    result["p99_ratio_vs_nsd"] = result["syncmesh_p99_ms"] / result["nsd_p99_ms"]
    result["qps_ratio_0x20"] = result["syncmesh_0x20_qps"] / result["nsd_0x20_qps"]
    result["p99_ratio_0x20"] = result["syncmesh_0x20_p99_ms"] / result["nsd_0x20_p99_ms"]
    return result


def print_size(result: dict[str, Any]) -> None:
    r = result["rounds"]
    size = result["size"]
    say(f"-- size {size:,}: rounds min/median/max")
    for key in (
        "ready_s", "catchup_s", "states_per_s", "ref_states_per_s", "idle_cpu_pct",
        "churn_cpu_pct", "cpu_pct_per_1k", "syncmesh_qps", "nsd_qps", "churn_qps",
        "syncmesh_0x20_qps", "nsd_0x20_qps", "syncmesh_p99_ms", "nsd_p99_ms", "churn_p99_ms",
        "syncmesh_0x20_p99_ms", "nsd_0x20_p99_ms", "syncmesh_hit_rate", "churn_hit_rate",
        "syncmesh_0x20_hit_rate", "idle_flushes_per_s", "syncmesh_flushes_per_s",
        "churn_flushes_per_s",
    ):  # fmt: skip
        if key in r:
            say(f"   {key:24s} {spread(r[key], '{:,.4g}')}")
    say(
        f"   rss_mb {result['rss_mb']:.1f} (peak {result['hwm_mb']:.1f}, "
        f"{result['rss_mb_per_1k']:.2f} MB per 1,000 services); after DNS runs "
        f"{result['rss_after_dns_mb']:.1f}; ECS RSS {result['ecs_rss_before_mb']:.1f} -> "
        f"{result['ecs_rss_after_inside_mb']:.1f} -> {result['ecs_rss_after_outside_mb']:.1f} MB"
    )


# -- plots -----------------------------------------------------------------------------------


def plot(results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size"] for r in results]

    def series(ax: Any, key: str, label: str, scale: float = 1.0, **kw: Any) -> None:
        med = [r[key] * scale for r in results]
        lo = [min(r["rounds"].get(key, [r[key]])) * scale for r in results]
        hi = [max(r["rounds"].get(key, [r[key]])) * scale for r in results]
        ax.errorbar(
            sizes,
            med,
            yerr=[[m - a for m, a in zip(med, lo, strict=True)],
                  [b - m for m, b in zip(med, hi, strict=True)]],
            label=label,
            marker="o",
            capsize=3,
            **kw,
        )  # fmt: skip

    def finish(ax: Any, title: str, ylabel: str) -> None:
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{s:,}" for s in sizes])
        ax.set_xlabel("service states")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)

    written = []
    note = "median of rounds, bars = min..max; 2-core VM"

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    series(axes[0][0], "ready_s", "spawn -> /readyz 200")
    series(axes[0][0], "catchup_s", "stream read (catch-up)")
    axes[0][0].axhline(GOAL_READY_S, color="red", ls="--", lw=1, label="goal 5 s")
    finish(axes[0][0], "Registry start to ready", "seconds")
    series(axes[0][1], "states_per_s", "registry (decode+validate+apply)")
    series(axes[0][1], "ref_states_per_s", "stock nats-py ordered consumer (count only)")
    finish(axes[0][1], "Ingest rate on cold start", "messages/s")
    axes[1][0].plot(
        sizes, [r["rss_mb"] for r in results], "b-", marker="o", label="RSS after ready"
    )
    axes[1][0].plot(sizes, [r["hwm_mb"] for r in results], "c:", marker="s", label="peak RSS")
    axes[1][0].plot(
        sizes, [r["rss_after_dns_mb"] for r in results], "m-.", marker="v",
        label="RSS after the DNS runs (answer cache)",
    )  # fmt: skip
    ax2 = axes[1][0].twinx()
    ax2.plot(sizes, [r["rss_mb_per_1k"] for r in results], "g--", marker="^")
    ax2.set_ylabel("MB per 1,000 services (green, dashed)", color="g")
    finish(axes[1][0], "Registry memory", "MB")
    series(axes[1][1], "cpu_pct_per_1k", "CPU per 1,000 changes/s (minus idle)")
    series(axes[1][1], "idle_cpu_pct", "idle CPU")
    finish(axes[1][1], "Registry CPU under churn", "% of one core")
    fig.suptitle(f"syncmesh registry vs inventory size ({note})")
    fig.tight_layout()
    path = out_dir / "bench-scale-registry.png"
    fig.savefig(path, dpi=90)
    written.append(path)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    series(axes[0], "syncmesh_qps", "syncmesh")
    series(axes[0], "churn_qps", "syncmesh + churn")
    series(axes[0], "nsd_qps", "NSD (static zone)")
    finish(axes[0], "DNS max QPS (Zipf mix over all names)", "queries/s")
    series(axes[1], "syncmesh_p99_ms", "syncmesh")
    series(axes[1], "churn_p99_ms", "syncmesh + churn")
    series(axes[1], "nsd_p99_ms", "NSD")
    finish(axes[1], f"DNS p99 at {results[0].get('latency_qps', 50000):,} qps offered", "ms")
    axes[1].set_yscale("log")
    series(axes[2], "syncmesh_hit_rate", "no churn")
    series(axes[2], "churn_hit_rate", "with churn")
    series(axes[2], "syncmesh_0x20_hit_rate", "0x20 case")
    finish(axes[2], "Answer-cache hit rate", "hits / (hits+misses)")
    fig.suptitle(f"syncmesh DNS vs inventory size ({note})")
    fig.tight_layout()
    path = out_dir / "bench-scale-dns.png"
    fig.savefig(path, dpi=90)
    written.append(path)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    series(axes[0], "syncmesh_0x20_qps", "syncmesh, 0x20 names")
    series(axes[0], "nsd_0x20_qps", "NSD, 0x20 names")
    series(axes[0], "syncmesh_qps", "syncmesh, lower case", ls=":")
    finish(axes[0], "DNS max QPS with 0x20 case randomisation", "queries/s")
    series(axes[1], "syncmesh_0x20_p99_ms", "syncmesh, 0x20 names")
    series(axes[1], "nsd_0x20_p99_ms", "NSD, 0x20 names")
    finish(axes[1], "p99 at fixed offered load, 0x20 names", "ms")
    axes[1].set_yscale("log")
    fig.suptitle(f"0x20 (Unbound use-caps-for-id) query names ({note})")
    fig.tight_layout()
    path = out_dir / "bench-scale-dns-0x20.png"
    fig.savefig(path, dpi=90)
    written.append(path)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.6))
    for key, label in (
        ("ecs_rss_before_mb", "before ECS queries"),
        ("ecs_rss_after_inside_mb", "after 10,000 subnets in cluster CIDRs"),
        ("ecs_rss_after_outside_mb", "after 10,000 more outside any CIDR"),
    ):
        ax.plot(sizes, [r[key] for r in results], marker="o", label=label)
    finish(ax, "Registry RSS with many ECS client subnets", "MB")
    fig.tight_layout()
    path = out_dir / "bench-scale-ecs-memory.png"
    fig.savefig(path, dpi=90)
    written.append(path)
    plt.close(fig)
    return written


# -- tables (docs/benchmarks.md) ------------------------------------------------------------


def markdown(results: list[dict[str, Any]]) -> str:
    """The tables of docs/benchmarks.md: median (min-max) of the rounds per size."""

    def cell(r: dict[str, Any], key: str, fmt: str) -> str:
        values = r["rounds"].get(key)
        if not values:
            return fmt.format(r[key])
        if len(values) == 1 or min(values) == max(values):
            return fmt.format(r[key])
        return f"{fmt.format(r[key])} ({fmt.format(min(values))}-{fmt.format(max(values))})"

    def table(title: str, rows: list[tuple[str, str, str]]) -> str:
        head = "| " + title + " | " + " | ".join(f"{r['size']:,}" for r in results) + " |"
        line = "| --- |" + " --- |" * len(results)
        body = [
            f"| {label} | " + " | ".join(cell(r, key, fmt) for r in results) + " |"
            for label, key, fmt in rows
        ]
        return "\n".join([head, line, *body])

    registry = table(
        "registry (states)",
        [
            ("spawn to /readyz 200, s", "ready_s", "{:.2f}"),
            ("stream read (catch-up), s", "catchup_s", "{:.2f}"),
            ("ingest, messages/s", "states_per_s", "{:,.0f}"),
            ("stock ordered consumer (count only), messages/s", "ref_states_per_s", "{:,.0f}"),
            ("ingest ratio vs stock consumer", "ingest_ratio", "{:.2f}"),
            ("RSS after ready, MB", "rss_mb", "{:.0f}"),
            ("RSS per 1,000 services, MB", "rss_mb_per_1k", "{:.2f}"),
            ("idle CPU, % of a core", "idle_cpu_pct", "{:.1f}"),
            ("CPU with 1,000 changes/s, %", "churn_cpu_pct", "{:.1f}"),
            ("CPU per 1,000 changes/s (minus idle), %", "cpu_pct_per_1k", "{:.1f}"),
            ("whole-cache invalidations/s while idle", "idle_flushes_per_s", "{:.1f}"),
        ],
    )
    dns = table(
        "DNS (states)",
        [
            ("distinct names in the query mix", "dns_names", "{:,}"),
            ("syncmesh max qps", "syncmesh_qps", "{:,.0f}"),
            ("NSD max qps", "nsd_qps", "{:,.0f}"),
            ("qps ratio syncmesh / NSD", "qps_ratio_vs_nsd", "{:.2f}"),
            ("syncmesh + 1,000 changes/s, max qps", "churn_qps", "{:,.0f}"),
            ("syncmesh p99 at 50,000 qps offered, ms", "syncmesh_p99_ms", "{:.2f}"),
            ("NSD p99 at 50,000 qps offered, ms", "nsd_p99_ms", "{:.2f}"),
            ("p99 ratio syncmesh / NSD", "p99_ratio_vs_nsd", "{:.1f}"),
            ("syncmesh + churn p99, ms", "churn_p99_ms", "{:.2f}"),
            ("syncmesh qps actually served at 50,000 offered", "syncmesh_fixed_qps", "{:,.0f}"),
            ("answer-cache hit rate", "syncmesh_hit_rate", "{:.3f}"),
            ("hit rate with churn", "churn_hit_rate", "{:.3f}"),
            ("whole-cache invalidations/s during the runs", "syncmesh_flushes_per_s", "{:.1f}"),
        ],
    )
    case = table(
        "0x20 names (states)",
        [
            ("syncmesh max qps", "syncmesh_0x20_qps", "{:,.0f}"),
            ("NSD max qps", "nsd_0x20_qps", "{:,.0f}"),
            ("qps ratio", "qps_ratio_0x20", "{:.2f}"),
            ("syncmesh p99 at 50,000 offered, ms", "syncmesh_0x20_p99_ms", "{:.2f}"),
            ("NSD p99 at 50,000 offered, ms", "nsd_0x20_p99_ms", "{:.2f}"),
            ("p99 ratio", "p99_ratio_0x20", "{:.1f}"),
            ("hit rate", "syncmesh_0x20_hit_rate", "{:.3f}"),
        ],
    )
    ecs = table(
        "ECS, RSS in MB (states)",
        [
            ("after ready (before any query)", "rss_mb", "{:.0f}"),
            ("before the ECS queries (after the DNS runs)", "ecs_rss_before_mb", "{:.0f}"),
            ("after 10,000 /24s inside cluster CIDRs", "ecs_rss_after_inside_mb", "{:.0f}"),
            ("after 10,000 more outside any CIDR", "ecs_rss_after_outside_mb", "{:.0f}"),
        ],
    )
    return "\n\n".join([registry, dns, case, ecs])


# -- main ------------------------------------------------------------------------------------


def last_line(results: list[dict[str, Any]]) -> str:
    top = results[-1]
    fields = {
        "sizes": ",".join(str(r["size"]) for r in results),
        "size": top["size"],
        "ready_s": f"{top['ready_s']:.2f}",
        "states_per_s": f"{top['states_per_s']:.0f}",
        "ref_states_per_s": f"{top['ref_states_per_s']:.0f}",
        "ingest_ratio_vs_ref": f"{top['ingest_ratio']:.2f}",
        "rss_mb": f"{top['rss_mb']:.0f}",
        "rss_mb_per_1k": f"{top['rss_mb_per_1k']:.2f}",
        "cpu_pct_per_1k_changes": f"{top['cpu_pct_per_1k']:.1f}",
        "syncmesh_qps": f"{top['syncmesh_qps']:.0f}",
        "nsd_qps": f"{top['nsd_qps']:.0f}",
        "qps_ratio_vs_nsd": f"{top['qps_ratio_vs_nsd']:.2f}",
        "p99_ratio_vs_nsd": f"{top['p99_ratio_vs_nsd']:.2f}",
        "churn_qps": f"{top['churn_qps']:.0f}",
        "churn_p99_ms": f"{top['churn_p99_ms']:.3f}",
        "hit_rate": f"{top['syncmesh_hit_rate']:.3f}",
        "churn_hit_rate": f"{top['churn_hit_rate']:.3f}",
        "qps_ratio_0x20": f"{top['qps_ratio_0x20']:.2f}",
        "p99_ratio_0x20": f"{top['p99_ratio_0x20']:.2f}",
        "ecs_rss_growth_mb": f"{top['ecs_rss_after_outside_mb'] - top['ecs_rss_before_mb']:.1f}",
        "gc_longest_pause_ms": f"{top['gc_longest_pause_ms']:.1f}",
        "ready_goal_met": "yes" if top["ready_s"] <= GOAL_READY_S else "no",
    }
    return " ".join(f"{k}={v}" for k, v in fields.items())


async def main(args: argparse.Namespace) -> None:
    ensure_tools()
    settings = Settings(
        args.rounds, args.seconds, args.latency_qps, args.churn, args.churn_s, args.queries,
        args.zipf, Path(args.registry_toml).read_text() if args.registry_toml else "",
    )  # fmt: skip
    sizes = [int(x) for x in args.sizes.split(",")]
    results = []
    began = time.monotonic()
    say(f"load average at start {load_average():.2f} (prefer < 1.5 for final figures)")
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"syncmesh-scale-{size}-") as tmp:
            result = await run_size(size, settings, Path(tmp))
        result["latency_qps"] = args.latency_qps
        result["load_after"] = load_average()
        results.append(result)
        print_size(result)
    say(f"sweep took {time.monotonic() - began:.0f}s; load average {load_average():.2f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "results": results}, indent=1))
    if not args.no_plot:
        try:
            for path in plot(results, REPO / "docs"):
                say(f"plot {path.relative_to(REPO)}")
        except ImportError:
            say("matplotlib is not installed: no plots (the figures are in the JSON)")
    say(last_line(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4, help="per dnsperf run")
    parser.add_argument("--latency-qps", type=int, default=50_000)
    parser.add_argument("--churn", type=int, default=1000, help="changes/s")
    parser.add_argument("--churn-s", type=float, default=6.0, help="seconds of churn per round")
    parser.add_argument("--queries", type=int, default=300_000, help="lines per query file")
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of name popularity")
    parser.add_argument(
        "--registry-toml",
        metavar="FILE",
        help="diagnostics: TOML appended to the registry's config (default: none, stock settings)",
    )
    parser.add_argument("--json", default=str(RESULTS))
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--plot-only", metavar="JSON")
    parser.add_argument("--markdown", metavar="JSON", help="print the tables of a saved run")
    arguments = parser.parse_args()
    if arguments.markdown:
        print(markdown(json.loads(Path(arguments.markdown).read_text())["results"]))
    elif arguments.plot_only:
        data = json.loads(Path(arguments.plot_only).read_text())
        for p in plot(data["results"], REPO / "docs"):
            print(p)
        print(last_line(data["results"]))
    else:
        asyncio.run(main(arguments))
