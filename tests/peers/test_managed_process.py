"""Peers the harness starts die with the process that started them, also when that
process is SIGKILLed (no teardown runs), and no Python runs between fork and exec."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from syncmesh_app.embedded import process

pytestmark = pytest.mark.peers


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return True
    return state == "Z"  # killed, waiting to be reaped by init


def test_a_peer_dies_with_a_killed_parent(tmp_path: Path) -> None:
    assert process._SETPRIV is not None, "util-linux setpriv is part of every Debian"
    starter = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from syncmesh_app.embedded.process import ManagedProcess\n"
        f"p = ManagedProcess('sleeper', ['sleep', '300'], Path({str(tmp_path / 's.log')!r}))\n"
        "p.start()\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    # setpriv execs the command in place: the pid becomes the sleeper's own.
    deadline = time.monotonic() + 30
    while not Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"sleep\0"):
        assert time.monotonic() < deadline, "the command never replaced setpriv"
        time.sleep(0.05)
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 30
    while not _dead(child):
        assert time.monotonic() < deadline, "the peer outlived the process that started it"
        time.sleep(0.05)
