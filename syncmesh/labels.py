"""Deterministic DNS labels for source names that are not DNS labels.

Rule (documented in docs/naming.md):
1. A name that already is a DNS label (``[a-z0-9]`` and inner ``-``, at most 63
   characters) is used unchanged.
2. Otherwise: lower-case it, replace every run of characters outside
   ``[a-z0-9]`` by one ``-``, strip leading and trailing ``-``, then append
   ``-`` and the first 6 hex digits of SHA-256 of the original name. The suffix
   keeps ``Foo`` and ``foo``, or ``a.b`` and ``a_b``, apart: they are different
   services in the source and must not merge.
3. A label longer than 63 characters is cut to 56 and gets the same suffix.

Two different names that still map to the same label (a SHA-256 prefix
collision, or a name that equals another's mapped form) are a *collision*:
``assign_labels`` keeps the label for the name that sorts first and reports
the others, which are not published.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["is_label", "to_label", "subset_label", "assign_labels", "LabelCollision"]

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9]+")


def is_label(name: str) -> bool:
    return bool(_LABEL.match(name))


def _suffix(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:6]


def to_label(name: str) -> str:
    if is_label(name):
        return name
    base = _NOT_LABEL_CHARS.sub("-", name.lower()).strip("-")[:56].strip("-")
    suffix = _suffix(name)
    return f"{base}-{suffix}" if base else f"x-{suffix}"


def subset_label(value: str) -> str | None:
    """How an instance version or tag is named in DNS and matched everywhere.

    Lower case, every run of characters outside ``[a-z0-9]`` becomes one ``-``,
    leading and trailing ``-`` stripped: ``1.2.3`` -> ``1-2-3``, ``Canary`` ->
    ``canary``. Unlike ``to_label`` there is no hash suffix: a person types these
    names (``1-2-3.version.payments.default.svc...``), so ``1.2.3`` and ``1_2_3``
    are one subset. None when nothing is left or it is longer than a label
    (never cut: a cut would make two long values one).
    """
    label = _NOT_LABEL_CHARS.sub("-", value.lower()).strip("-")
    if not label or len(label) > 63:
        return None
    return label


class LabelCollision(Exception):
    def __init__(self, label: str, kept: str, dropped: str) -> None:
        super().__init__(
            f"label {label!r}: {dropped!r} collides with {kept!r}; {dropped!r} not published"
        )
        self.label = label
        self.kept = kept
        self.dropped = dropped


def assign_labels(names: list[str] | set[str]) -> tuple[dict[str, str], list[LabelCollision]]:
    """Map source names to labels; returns (name -> label, collisions)."""
    out: dict[str, str] = {}
    owner: dict[str, str] = {}
    collisions: list[LabelCollision] = []
    for name in sorted(names):
        label = to_label(name)
        if label in owner:
            collisions.append(LabelCollision(label, owner[label], name))
            continue
        owner[label] = name
        out[name] = label
    return out, collisions
