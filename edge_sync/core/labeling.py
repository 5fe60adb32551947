"""Incremental DNS-label ownership inside one namespace.

Same rule as ``syncmesh.labels.assign_labels`` (the name that sorts first keeps
a contested label, the others are reported and not published) but updated one
name at a time, so a catalog of thousands of services does not recompute every
label on every change.
"""

from __future__ import annotations

from typing import NamedTuple

from syncmesh.labels import to_label

__all__ = ["LabelBook", "OwnerChange"]


class OwnerChange(NamedTuple):
    """The owner of ``label`` before and after one add or remove (None = unowned)."""

    label: str
    before: str | None
    after: str | None


class LabelBook:
    def __init__(self) -> None:
        self._label_of: dict[str, str] = {}
        self._claimants: dict[str, set[str]] = {}
        self._owner: dict[str, str] = {}
        self._collided = 0

    def __len__(self) -> int:
        return len(self._label_of)

    def add(self, name: str) -> OwnerChange:
        label = self._label_of.get(name)
        if label is None:
            label = to_label(name)
            self._label_of[name] = label
            claimants = self._claimants.setdefault(label, set())
            if claimants:
                self._collided += 1
            claimants.add(name)
        before = self._owner.get(label)
        after = name if before is None or name < before else before
        self._owner[label] = after
        return OwnerChange(label, before, after)

    def remove(self, name: str) -> OwnerChange | None:
        label = self._label_of.pop(name, None)
        if label is None:
            return None
        claimants = self._claimants[label]
        claimants.discard(name)
        if claimants:
            self._collided -= 1
        before = self._owner[label]
        if not claimants:
            del self._claimants[label]
            del self._owner[label]
            return OwnerChange(label, before, None)
        after = before if before != name else min(claimants)
        self._owner[label] = after
        return OwnerChange(label, before, after)

    def collision_count(self) -> int:
        """How many names lost their label to another name."""
        return self._collided
