"""The service-set digest against its published test vector (schemas/vectors/)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from syncmesh.digest import EMPTY_DIGEST, digest_line, service_set_digest

pytestmark = pytest.mark.core

VECTOR = Path(__file__).resolve().parents[2] / "schemas" / "vectors" / "service-set-digest.json"
CASES = json.loads(VECTOR.read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"][:40] for c in CASES])
def test_implementation_matches_the_test_vector(case: dict) -> None:
    entries = [tuple(s) for s in case["services"]]
    assert service_set_digest(entries) == (case["count"], case["digest"])  # type: ignore[arg-type]
    lines = sorted(digest_line(*e) for e in entries)  # type: ignore[arg-type]
    assert [line.decode() for line in lines] == case["sorted_lines"]
    # The vector is self-consistent: its lines hash to its digest.
    joined = "".join(case["sorted_lines"]).encode()
    assert hashlib.sha256(joined).hexdigest() == case["digest"]


def test_order_of_the_input_does_not_matter() -> None:
    entries = [("b", "x", 1, 2), ("a", "y", 3, 4)]
    assert service_set_digest(entries) == service_set_digest(reversed(entries))
    assert service_set_digest([]) == (0, EMPTY_DIGEST)


def test_epoch_and_revision_both_count() -> None:
    # Revisions restart with every agent run: a new run's revision 1 is not the old one's.
    assert service_set_digest([("d", "s", 5, 1)]) != service_set_digest([("d", "s", 9, 1)])
    assert service_set_digest([("d", "s", 5, 1)]) != service_set_digest([("d", "s", 5, 2)])
