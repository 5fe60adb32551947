"""Compile the environment's and the checkout's Python files to bytecode, once.

``uv sync`` leaves ``.pyc`` writing to the first import, and a process started
with ``PYTHONDONTWRITEBYTECODE=1`` (CI images, the Dockerfile's runtime, this
machine's shell) never writes one: every ``python -m syncmesh_app edge`` then
compiles every module it imports again, about 0.2 s of an agent's start that a
deployed image (built with ``UV_COMPILE_BYTECODE=1``) does not pay. ``./run
setup`` and the agent benches call ``ensure()``; files whose ``.pyc`` is up to
date are only stat'ed (well under a second for the whole environment).

``python -m harness.bytecode`` prints how many seconds it took.
"""

from __future__ import annotations

import compileall
import sys
import sysconfig
import time
from pathlib import Path

__all__ = ["PACKAGES", "ensure"]

REPO = Path(__file__).resolve().parents[1]
# The checkout's packages (installed as an editable link, so not in site-packages).
PACKAGES = (
    "syncmesh",
    "syncmesh_io",
    "syncmesh_app",
    "edge_sync",
    "global_registry",
    "dns_server",
    "harness",
)


def ensure() -> float:
    """Write every missing or stale ``.pyc``; the seconds it took."""
    started = time.monotonic()
    roots = [Path(sysconfig.get_path("purelib")), Path(sysconfig.get_path("platlib"))]
    roots += [REPO / name for name in PACKAGES]
    for root in dict.fromkeys(roots):
        if root.is_dir():
            # quiet=2: a package's deliberately broken test data is not our error.
            compileall.compile_dir(root, quiet=2, workers=1)
    return time.monotonic() - started


if __name__ == "__main__":
    print(f"bytecode up to date in {ensure():.1f}s", flush=True)
    sys.exit(0)
