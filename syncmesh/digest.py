"""The service-set digest of a cluster: what a beat announces and what a consumer compares.

The agent puts ``(services, digest)`` of the live services it knows the stream
holds for its cluster into every ``ClusterBeat``; a consumer computes the same
pair from its own view of that cluster and, when they differ for longer than a
few beats, asks the agent to resync (docs/digest.md). Both sides call this one
function, so they cannot drift apart.

Definition (also for consumers in other languages; test vector in
``schemas/digest-test-vector.json``): for every live (not deleted) service of
the cluster, the line ``<namespace>/<service>=<epoch>.<revision>\\n`` in ASCII,
with ``epoch`` and ``revision`` of the message that holds it, in decimal without
leading zeros; sort the lines as byte strings; ``digest`` is the lower-case hex
SHA-256 of their concatenation, ``services`` the number of lines. No services:
``(0, sha256(b"").hexdigest())``.

The epoch is part of each line: revisions restart at 1 with every agent run, so
``revision`` alone would give a new agent's republish the same digest as the
old agent's messages it replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["digest_line", "service_set_digest", "EMPTY_DIGEST"]

EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()


def digest_line(namespace: str, service: str, epoch: int, revision: int) -> bytes:
    """One line of the digest input (labels are ASCII by the schema)."""
    return f"{namespace}/{service}={epoch}.{revision}\n".encode()


def service_set_digest(entries: Iterable[tuple[str, str, int, int]]) -> tuple[int, str]:
    """``(count, hex SHA-256)`` of ``(namespace, service, epoch, revision)`` of live services."""
    lines = sorted(digest_line(ns, svc, epoch, revision) for ns, svc, epoch, revision in entries)
    return len(lines), hashlib.sha256(b"".join(lines)).hexdigest()
