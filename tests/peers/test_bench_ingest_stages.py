"""``bench/ingest_stages.py`` on a small stream: every stage reads every message.

The figures themselves belong to the benchmark, not to a test; this only keeps
the breakdown the README quotes runnable (each stage is a fresh process reading
a real nats-server's stream with the registry's reader).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]


def test_every_stage_reads_the_whole_stream_and_reports_a_figure() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "ingest_stages.py"),
            "--clusters",
            "2",
            "--services",
            "30",
            "--instances",
            "3",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    last = run.stdout.strip().splitlines()[-1]
    figures = dict(re.findall(r"(\w+)=([0-9.]+)", last))
    assert set(figures) == {
        "ref_us",
        "frames_us",
        "decode_us",
        "validate_us",
        "apply_us",
        "apply_vs_ref",
    }, last
    assert all(float(value) > 0 for value in figures.values()), last
