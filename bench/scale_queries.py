"""The query files dnsperf replays against the registry and NSD in ``bench/scale.py``.

Written once per size, before any DNS round, so that every server and every
round is asked the very same sequence (seeded draws): plain lower-case names,
the same names in 0x20 random case, and two ECS files (subnets inside the
clusters' client CIDRs, then outside any). ``QueryFiles.distinct`` is every
distinct question, which the bench asks the registry once to build NSD's zone.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import ZONE, Zipf, mixed_case, wire_query, write_binary_queries
from bench.scale_inventory import Inventory

__all__ = ["question_stream", "QueryFiles", "write_query_files"]


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
    """The files of one size (dnsperf ``-B`` binary input) and the distinct questions."""

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
