"""Provision every real peer (idempotent, fast when the cache is warm) and print versions.

``./run peers`` (``python -m harness.install``). The log of CI shows these lines:
``Consul v1.14.11``, the Nacos version and ``nats-server: v2.15.x``.
"""

from __future__ import annotations

import subprocess
import sys
import time

__all__ = ["main"]


def main() -> int:
    from harness.consul_build import ensure_consul
    from harness.nacos_build import ensure_nacos
    from harness.nats_peer import nats_version

    started = time.monotonic()
    print(f"peer nats: {nats_version()}", flush=True)
    consul = ensure_consul()
    first = subprocess.run([str(consul), "version"], capture_output=True, text=True).stdout
    print(f"peer consul: {first.splitlines()[0] if first else '?'} ({consul})", flush=True)
    nacos = ensure_nacos()
    print(f"peer nacos: Nacos {nacos.version}", flush=True)
    print(f"peers ready in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
