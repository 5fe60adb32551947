"""Opt-out service filters: shell globs on the source name or ``namespace/name``."""

from __future__ import annotations

from fnmatch import fnmatchcase

from edge_sync.config import FilterConfig

__all__ = ["ServiceFilter"]


class ServiceFilter:
    def __init__(self, config: FilterConfig) -> None:
        self._include = list(config.include)
        self._exclude = list(config.exclude)
        # The default (everything, nothing excluded) needs no pattern matching.
        self._everything = "*" in self._include and not self._exclude

    @staticmethod
    def _any(patterns: list[str], namespace: str, name: str) -> bool:
        qualified = f"{namespace}/{name}"
        return any(fnmatchcase(name, p) or fnmatchcase(qualified, p) for p in patterns)

    def accepts(self, namespace: str, name: str) -> bool:
        if self._everything:
            return True
        return self._any(self._include, namespace, name) and not self._any(
            self._exclude, namespace, name
        )

    def may_accept_name(self, name: str) -> bool:
        """False only when no namespace could make ``name`` pass (lets a source skip fetching it)."""
        if self._everything:
            return True
        plain_excludes = [p for p in self._exclude if "/" not in p]
        if any(fnmatchcase(name, p) for p in plain_excludes):
            return False
        if any("/" in p for p in self._include):
            return True
        return any(fnmatchcase(name, p) for p in self._include)
