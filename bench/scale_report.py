"""What ``bench/scale.py`` reports: per size on the console, plots, tables, the last line.

Everything here reads the result dicts ``run_size`` returns (or the same dicts
saved in ``bench/results/scale.json``): the medians at the top level and every
round under ``"rounds"``. Nothing here measures, so ``--plot-only`` and
``--markdown`` rebuild the figures of a saved run without a nats-server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import say, spread

__all__ = ["GOAL_READY_S", "print_size", "plot", "markdown", "last_line"]

# The start-to-ready goal (README's goal table): drawn on the plot, checked by the last line.
GOAL_READY_S = 5.0


# -- one size, on the console ----------------------------------------------------------------


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
        "churn_flushes_per_s", "after_churn_qps", "after_churn_hit_rate",
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
        if key not in r:  # a figure added after that run was saved
            return "n/a"
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
            ("syncmesh max qps in the 4 s after churn stops", "after_churn_qps", "{:,.0f}"),
            ("hit rate in the 4 s after churn stops", "after_churn_hit_rate", "{:.3f}"),
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


# -- the last line ---------------------------------------------------------------------------


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
        "after_churn_qps_ratio_vs_nsd": (
            f"{top['after_churn_qps'] / top['nsd_qps']:.2f}" if "after_churn_qps" in top else "n/a"
        ),
        "qps_ratio_0x20": f"{top['qps_ratio_0x20']:.2f}",
        "p99_ratio_0x20": f"{top['p99_ratio_0x20']:.2f}",
        "ecs_rss_growth_mb": f"{top['ecs_rss_after_outside_mb'] - top['ecs_rss_before_mb']:.1f}",
        "gc_longest_pause_ms": f"{top.get('gc_longest_pause_ms', float('nan')):.1f}",
        "ready_goal_met": "yes" if top["ready_s"] <= GOAL_READY_S else "no",
    }
    return " ".join(f"{k}={v}" for k, v in fields.items())
