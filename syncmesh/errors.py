"""The root error type: every rejection and failure carries a machine reason and a detail.

``reason`` is a short, stable token (a metric label and a log key, such as
``future-epoch`` or ``cidr``); ``detail`` says what exactly was wrong, for people.
"""

from __future__ import annotations

__all__ = ["SyncmeshError"]


class SyncmeshError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
