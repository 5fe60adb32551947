"""Where a cold start spends its time per message, stage by stage, against the stock consumer.

``registry_ingest.py`` times the whole registry; this splits the same read into
what each stage adds, on a real nats-server holding the same stream (epoch
claims, CLUSTERS x SERVICES service states of INSTANCES instances, one beat
per cluster). Each stage runs in a fresh process on uvloop with the GC paused,
as the registry's catch-up does, and reads the whole stream with the
registry's own ``FastOrderedReader``; the batches go to:

- ``frames``: nothing (the frame parser and the socket reads alone);
- ``decode``: the schema's decoders (msgspec, the labels' check);
- ``validate``: ``validate_message`` (decode plus every content check);
- ``apply``: ``Ingest.handle_batch`` into a fresh ``RegistryView`` (the
  registry's read path, without the application around it).

The reference is ``registry_ingest.py``'s: nats-py's stock ordered push
consumer whose callback only counts. Rounds are interleaved; the spread
(min/median/max) of each is printed, and the last line has the medians in
microseconds per message::

    .venv/bin/python bench/ingest_stages.py [--clusters 100 --services 1000 --instances 5] [--rounds 3]

    ref_us=... frames_us=... decode_us=... validate_us=... apply_us=... apply_vs_ref=...
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, reference_consumer, spread  # noqa: E402
from bench.registry_ingest import gateway_listener, publish, stream_arguments  # noqa: E402
from global_registry.config import StaleConfig  # noqa: E402
from global_registry.core.ingest import Delivery, Ingest, IngestResult  # noqa: E402
from global_registry.core.view import RegistryView  # noqa: E402
from global_registry.io.fast_reader import FastOrderedReader, install_parser  # noqa: E402
from harness.nats_peer import nats_server  # noqa: E402
from syncmesh import subjects  # noqa: E402
from syncmesh.limits import LimitsConfig  # noqa: E402
from syncmesh.schema import (  # noqa: E402
    Locality,
    decode_cluster_beat,
    decode_epoch_claim,
    decode_service_state,
)
from syncmesh.validate import validate_message  # noqa: E402

STAGES = ("frames", "decode", "validate", "apply")


def stage_handler(stage: str) -> Callable[[list[Delivery]], None]:
    """What one stage does with each batch the reader delivers."""
    limits = LimitsConfig()
    if stage == "frames":
        return lambda batch: None
    if stage == "decode":
        svc, beat = f"{subjects.PREFIX}.svc.".encode(), f"{subjects.PREFIX}.cluster.".encode()

        def decode(batch: list[Delivery]) -> None:
            for subject, data, *_ in batch:
                subject.decode()
                if subject.startswith(svc):
                    decode_service_state(data)
                elif subject.startswith(beat):
                    decode_cluster_beat(data)
                else:
                    decode_epoch_claim(data)

        return decode
    if stage == "validate":

        def validate(batch: list[Delivery]) -> None:
            for subject, data, *_ in batch:
                validate_message(subject.decode(), data, limits)

        return validate
    ingest = Ingest(RegistryView(StaleConfig(), limits, Locality()), limits)
    ingest.begin(1 << 62, 0.0)
    loop = asyncio.get_running_loop()

    def report(result: IngestResult) -> None:
        if result.rejected is not None:
            raise SystemExit(f"rejected: {result.rejected}")

    return lambda batch: ingest.handle_batch(batch, loop.time(), time.time(), report)


async def child(url: str, stage: str) -> None:
    """One stage reading the whole stream, in its own process."""
    nc = await nats.connect(url)
    info = await nc.jetstream().stream_info(subjects.STREAM)
    last = int(info.state.last_seq)
    handle = stage_handler(stage)
    done = asyncio.Event()
    count = 0

    def on_batch(batch: list[Delivery]) -> None:
        nonlocal count
        handle(batch)
        count += len(batch)
        if batch[-1][2] >= last:
            done.set()

    gc.disable()
    started = time.perf_counter()
    reader = FastOrderedReader(
        nc, install_parser(nc), subjects.STREAM, list(subjects.STREAM_SUBJECTS), on_batch
    )
    await reader.start()
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - started
    print(json.dumps({"stage": stage, "seconds": elapsed, "messages": count}), flush=True)
    await reader.stop()
    await nc.close()


async def run_child(url: str, stage: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        url,
        "--stage",
        stage,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 600)
    await proc.wait()
    if not line:
        raise SystemExit(f"stage {stage} exited with {proc.returncode} and no result")
    result: dict[str, Any] = json.loads(line)
    return result


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="syncmesh-bench-") as tmp:
        async with nats_server(workdir=Path(tmp)) as peer:
            gateway = await gateway_listener()
            port = gateway.sockets[0].getsockname()[1]
            await publish(peer.url, args.clusters, args.services, args.instances, port)
            messages = args.clusters * (args.services + 2)
            rounds: dict[str, list[float]] = {}
            for r in range(args.rounds):
                ref_s = await reference_consumer(peer.url, messages, timeout=120)
                rounds.setdefault("ref", []).append(ref_s / messages * 1e6)
                for stage in STAGES:
                    result = await run_child(peer.url, stage)
                    if result["messages"] != messages:
                        raise SystemExit(f"{stage}: {result['messages']} messages, not {messages}")
                    rounds.setdefault(stage, []).append(result["seconds"] / messages * 1e6)
                print(
                    f"round {r + 1} (us/message): "
                    + " ".join(f"{name} {values[-1]:.2f}" for name, values in rounds.items())
                    + f"; load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
            gateway.close()
            print("rounds min/median/max (us/message):")
            for name, values in rounds.items():
                print(f"  {name:9s} {spread(values, '{:.2f}')}")
            m = {name: median(values) for name, values in rounds.items()}
            print(
                " ".join(f"{name}_us={value:.2f}" for name, value in m.items())
                + f" apply_vs_ref={m['ref'] / m['apply']:.2f}"
            )


if __name__ == "__main__":
    parser = stream_arguments(__doc__)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        import uvloop

        uvloop.run(child(arguments.child, arguments.stage))
    else:
        asyncio.run(main(arguments))
