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
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ZONE,
    DnsRun,
    ask_all,
    dnsperf,
    ensure_tools,
    free_udp_tcp_port,
    gateway_listeners,
    hit_rate,
    load_average,
    median,
    metric_sum,
    reference_consumer,
    say,
    scrape,
    start_nsd,
    stop,
    wait_answering,
    zone_of,
)
from bench.scale_inventory import Churn, Inventory, publish_inventory  # noqa: E402
from bench.scale_queries import write_query_files  # noqa: E402
from bench.scale_registry import Registry, spawn_registry  # noqa: E402
from bench.scale_report import last_line, markdown, plot, print_size  # noqa: E402
from harness.nats_peer import nats_server  # noqa: E402
from syncmesh import subjects  # noqa: E402
from syncmesh_io.nats_connection import ensure_stream  # noqa: E402

__all__ = ["Settings", "dns_round", "run_size", "main"]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "scale.json"
# Whole-cache invalidations of the registry's DNS answers, counted next to the hit
# rate: each one empties the answer cache, so they are what explains a low one.
EVERYTHING = 'syncmesh_registry_view_changes_total{scope="everything"}'


# -- one size --------------------------------------------------------------------------------


@dataclass
class Settings:
    """The command line's measurement settings, as ``run_size`` and ``dns_round`` read them."""

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


async def recovery_round(
    http: aiohttp.ClientSession,
    reg: Registry,
    datafile: Path,
    s: Settings,
    out: dict[str, list[float]],
) -> None:
    """Max qps and hit rate of the registry in the first ``s.seconds`` after churn stops."""
    before = await scrape(http, reg.metrics_url)
    run: DnsRun = await asyncio.to_thread(dnsperf, reg.dns_port, datafile, s.seconds)
    after = await scrape(http, reg.metrics_url)
    out.setdefault("after_churn_qps", []).append(run.qps)
    out.setdefault("after_churn_hit_rate", []).append(hit_rate(before, after))
    say(
        f"  after churn: max {run.qps:,.0f} qps in the first {s.seconds} s "
        f"(hit rate {out['after_churn_hit_rate'][-1]:.3f})"
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
                # Recovery: the answers the churn changed are rendered again on their
                # next miss. Measured on its own (it used to fall into the 0x20 run
                # that came next), and it re-warms the cache for that run.
                await recovery_round(http, reg, files.plain, s, rounds)
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


# -- main ------------------------------------------------------------------------------------


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
