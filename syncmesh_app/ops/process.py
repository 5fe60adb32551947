"""The process runner of every long-running command: SIGTERM and SIGINT stop it cleanly.

Orchestrators stop with SIGTERM, people with Ctrl-C; both must end the same way:
one "stopping" line, the main task cancelled so every ``async with`` unwinds
(the registry withdraws readiness before its DNS stops, the agent stops its
source and publisher), a "stopped" line and exit status 0. Without handlers,
SIGTERM killed the process at once with status 143 and no cleanup. A second
signal while stopping exits at once (status 128 + signal), for a stop that hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any

__all__ = ["STOP_SIGNALS", "run", "supervise"]

log = logging.getLogger("syncmesh")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def supervise(coro: Coroutine[Any, Any, int | None], name: str) -> int:
    """Run ``coro`` as a task until it ends or a stop signal cancels it."""
    loop = asyncio.get_running_loop()
    task: asyncio.Task[int | None] = asyncio.ensure_future(coro)
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            log.warning("%s: second %s while stopping: exiting now", name, sig.name)
            logging.shutdown()
            os._exit(128 + int(sig))
        received.append(sig)
        log.info("%s: stopping on %s", name, sig.name)
        task.cancel()

    installed = []
    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        result = await task
    except asyncio.CancelledError:
        if not received:
            raise
        result = 0
    finally:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    if received:
        log.info("%s: stopped", name)
        return 0
    return int(result or 0)


def run(coro: Coroutine[Any, Any, int | None], name: str) -> int:
    """``asyncio.run`` on uvloop with the stop signals handled; returns the exit status."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional at run time
        pass
    try:
        return asyncio.run(supervise(coro, name))
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were installed
        return 0
