"""How a source adapter talks to the agent, and what the agent expects of a source."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from edge_sync.core.model import ServiceRef, SourceService

__all__ = ["SourceSink", "Source"]


class SourceSink(Protocol):
    def apply(
        self, changed: Iterable[SourceService] = (), removed: Iterable[ServiceRef] = ()
    ) -> None:
        """Some services changed (full state each) or disappeared."""

    def replace_all(self, services: Iterable[SourceService]) -> None:
        """The complete view; anything not in it is gone."""

    def synced(self) -> None:
        """The source has delivered its complete view once (start-up reconciliation may run)."""

    def failed(self, reason: str, detail: str) -> None:
        """The source could not be read; the last good state stays published."""

    def recovered(self) -> None:
        """A read of the source succeeded."""

    def invalid(self, reason: str, detail: str) -> None:
        """Input from the source was rejected (counted, logged once per reason)."""

    def request(self, kind: str) -> None:
        """One request was sent to the source (for the request counter)."""

    def event(self, kind: str) -> None:
        """Something worth counting happened in the source (an index reset, a re-list)."""


class Source(Protocol):
    async def run(self) -> None:
        """Watch the source and report to the sink until cancelled; never raise on source errors."""
