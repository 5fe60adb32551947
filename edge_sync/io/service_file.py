"""Asyncio adapter: polls the service file and hands every new good version to the sink."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from edge_sync.config import FileSourceConfig
from edge_sync.core.service_file import (
    MAX_FILE_BYTES,
    FileStamp,
    FileWatch,
    ServiceFileError,
    parse_service_file,
)
from edge_sync.core.source_api import SourceSink

__all__ = ["FileSource", "file_format"]


def file_format(path: str) -> str:
    return "yaml" if Path(path).suffix.lower() in (".yaml", ".yml") else "toml"


class FileSource:
    def __init__(self, config: FileSourceConfig, sink: SourceSink) -> None:
        self.config = config
        self.sink = sink
        self.path = Path(config.path)
        self.format = file_format(config.path)
        self._watch = FileWatch(config.rehash_interval_s)
        self._synced = False
        self._last_good = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.poll_once(loop.time())
            await asyncio.sleep(self.config.poll_interval_s)

    def _stat(self) -> FileStamp | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._watch.file_missing():
                self.sink.failed(
                    "file_missing", f"{self.path} does not exist; keeping the last good state"
                )
            return None
        except OSError as exc:
            self.sink.failed("file_unreadable", f"{self.path}: {exc}")
            return None
        return FileStamp(st.st_mtime_ns, st.st_size)

    def poll_once(self, now: float) -> None:
        stamp = self._stat()
        if not self._watch.should_read(stamp, now):
            return
        assert stamp is not None
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            self.sink.failed("file_unreadable", f"{self.path}: {exc}")
            return
        if not self._watch.content_read(stamp, data, now):
            if self._last_good:
                self.sink.recovered()
            return
        try:
            services = parse_service_file(data, self.format)
        except ServiceFileError as exc:
            self._last_good = False
            detail = f"{self.path}: {exc.detail}; keeping the last good state"
            self.sink.invalid(f"file_{exc.reason}", detail)
            self.sink.failed("invalid_file", detail)
            return
        self._last_good = True
        self.sink.replace_all(services)
        self.sink.recovered()
        if not self._synced:
            self._synced = True
            self.sink.synced()
