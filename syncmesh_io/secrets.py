"""Secrets that live in files and rotate: read again when the file changes.

Operators mount credentials as files (Kubernetes Secrets, Vault agent, systemd
credentials) and replace them in place when they rotate. ``SecretFile.value()``
re-reads the file only when its modification time or size changed, so calling
it on every request costs one ``stat``.
"""

from __future__ import annotations

import os

__all__ = ["SecretFile"]


class SecretFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._value = ""
        self.reads = 0

    def value(self) -> str:
        """The file's content (stripped); raises OSError when it cannot be read."""
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            with open(self.path, encoding="utf-8") as f:
                self._value = f.read().strip()
            self._stamp = stamp
            self.reads += 1
        return self._value

    def changed(self) -> bool:
        """True once after the file changed since the last ``value()``."""
        before = self._stamp
        try:
            self.value()
        except OSError:
            return False
        return before is not None and self._stamp != before
