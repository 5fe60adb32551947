"""The soak: the nemesis's system under steady churn and DNS load, no faults.

``python -m harness.soak --minutes 10 --rate 100`` changes services in Consul,
Nacos and the service file at ``--rate`` changes per second while dnsperf sends
a steady DNS load to one registry replica, samples both replicas' RSS every
10 s, counts ERROR lines in every agent and registry log, and at the end pauses
the churn and runs the nemesis checker (inventory equals the sources, DNS
answers the nearest healthy cluster). Writes the RSS series as JSON and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.nemesis import CONVERGE_TIMEOUT_S, NAMESPACE, SERVICES, ZONE, Churn, converge
from harness.nemesis_system import NemesisSystem, nemesis_system

__all__ = ["main"]

log = logging.getLogger("soak")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _error_lines(system: NemesisSystem) -> dict[str, int]:
    counts = {}
    for agent in system.agents.values():
        counts[f"agent-{agent.cluster}"] = agent.log.read_text(errors="replace").count(" ERROR ")
    for reg in system.registries.values():
        counts[f"registry-{reg.name}"] = reg.log.read_text(errors="replace").count(" ERROR ")
    return counts


def _dnsperf(port: int, seconds: float, qps: int, workdir: Path) -> subprocess.Popen[bytes] | None:
    binary = shutil.which("dnsperf")
    if binary is None:
        log.warning("dnsperf missing (apt-get install dnsperf): no DNS load")
        return None
    queries = workdir / "queries.txt"
    queries.write_text(
        "".join(f"{s}.{NAMESPACE}.svc.{ZONE} {t}\n" for s in SERVICES for t in ("A", "SRV"))
    )
    return subprocess.Popen(
        [
            binary,
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            str(queries),
            "-Q",
            str(qps),
            "-l",
            str(int(seconds)),
            "-q",
            "100",
        ],
        stdout=(workdir / "dnsperf.out").open("wb"),
        stderr=subprocess.STDOUT,
    )


def _plot(series: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    minutes = [s["t"] / 60 for s in series]
    for name in ("r1", "r2"):
        ax.plot(minutes, [s[name] for s in series], label=f"registry {name}")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title("Registry RSS during the soak")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


async def soak(
    minutes: float, rate: float, qps: int, workdir: Path, out: Path, workers: int = 16
) -> dict[str, object]:
    async with nemesis_system(workdir) as system:
        churn = Churn(system, random.Random(42))
        churn.running.set()
        # Several writers: one change is up to six HTTP calls to a source.
        churners = [asyncio.create_task(churn.run(rate / workers)) for _ in range(workers)]
        started = time.monotonic()
        duration = minutes * 60
        dnsperf = _dnsperf(system.registries["r1"].dns_port, duration, qps, workdir)
        series: list[dict[str, float]] = []
        try:
            while time.monotonic() - started < duration:
                sample = {"t": round(time.monotonic() - started, 1)}
                for name, reg in system.registries.items():
                    assert reg.process is not None
                    sample[name] = round(_rss_mb(reg.process.pid), 1)
                series.append(sample)
                await asyncio.sleep(10.0)
            churn.running.clear()
            converge_s, problems = await converge(system, churn, CONVERGE_TIMEOUT_S)
        finally:
            for churner in churners:
                churner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await churner
            if dnsperf is not None:
                dnsperf.terminate()
                dnsperf.wait(timeout=10)
        elapsed = time.monotonic() - started
        errors = _error_lines(system)
        dns_summary = ""
        if (workdir / "dnsperf.out").exists():
            text = (workdir / "dnsperf.out").read_text(errors="replace")
            dns_summary = " ".join(
                line.strip()
                for line in text.splitlines()
                if "Queries completed" in line
                or "Queries lost" in line
                or "Queries per second" in line
            )
    first = series[1] if len(series) > 1 else series[0]
    last = series[-1]
    result: dict[str, object] = {
        "minutes": minutes,
        "changes": churn.writes,
        "changes_per_s": round(churn.writes / elapsed, 1),
        "failed_writes": churn.failed_writes,
        "rss_mb_start": {k: first[k] for k in ("r1", "r2")},
        "rss_mb_end": {k: last[k] for k in ("r1", "r2")},
        "rss_mb_max": {k: max(s[k] for s in series) for k in ("r1", "r2")},
        "error_lines": errors,
        "converge_s": round(converge_s, 2),
        "problems": problems[:20],
        "dnsperf": dns_summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak-rss.json").write_text(json.dumps({"series": series, "result": result}, indent=1))
    _plot(series, out / "soak-rss.png")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="service changes per second")
    parser.add_argument("--qps", type=int, default=1000, help="steady DNS queries per second")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        result = asyncio.run(soak(args.minutes, args.rate, args.qps, workdir, args.out))
    print(json.dumps(result, indent=1))
    ok = not result["problems"] and not any(dict(result["error_lines"]).values())  # type: ignore[call-overload]
    rss = result["rss_mb_end"], result["rss_mb_start"]
    print(
        f"soak_ok={'yes' if ok else 'no'} changes_per_s={result['changes_per_s']} "
        f"converge_s={result['converge_s']} rss_start_mb={rss[1]} rss_end_mb={rss[0]}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
