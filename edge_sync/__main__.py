"""``python -m edge_sync --config edge.toml``: the agent without the syncmesh CLI (bench, debugging)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from edge_sync.app import run_edge
from edge_sync.config import EdgeConfig
from syncmesh.configfile import ConfigError, load_config

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_sync")
    parser.add_argument("--config", required=True, help="edge agent TOML file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        config = load_config(args.config, EdgeConfig, "SYNCMESH_EDGE")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        runner.run(run_edge(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
