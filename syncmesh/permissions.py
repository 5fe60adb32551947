"""NATS permissions that give each agent only its own cluster's subjects.

One publisher per cluster (ANCHORS pain point 5: syncers deleting each other's
entries): an agent may publish service states and beats of its own cluster
and nothing else, so even a misconfigured or compromised agent cannot
overwrite another cluster's state. The registry validates subject against
payload as well, but only the server can stop the write itself.

``syncmesh nats-permissions agent east`` / ``... registry r1`` / ``... consumer -`` print the
``permissions`` block for a nats-server ``authorization.users`` entry. The
JetStream API subjects are the ones the agent and the registry use: stream
info/create/update (never delete or purge) and ephemeral ordered consumers.
"""

from __future__ import annotations

import json
import sys

from syncmesh import subjects

__all__ = [
    "agent_permissions",
    "registry_permissions",
    "consumer_permissions",
    "user_entry",
    "main",
]

_S = subjects.STREAM
# Stream management without delete/purge, and ephemeral (ordered) consumers on our stream.
_JS_COMMON = [
    "$JS.API.INFO",
    f"$JS.API.STREAM.INFO.{_S}",
    f"$JS.API.STREAM.CREATE.{_S}",
    f"$JS.API.STREAM.UPDATE.{_S}",
    f"$JS.API.CONSUMER.CREATE.{_S}",
    f"$JS.API.CONSUMER.CREATE.{_S}.>",
    f"$JS.API.CONSUMER.INFO.{_S}.>",
    f"$JS.API.CONSUMER.DELETE.{_S}.>",
    f"$JS.API.DIRECT.GET.{_S}",
    f"$JS.API.DIRECT.GET.{_S}.>",
    f"$JS.API.STREAM.MSG.GET.{_S}",
    f"$JS.FC.{_S}.>",
]


def agent_permissions(cluster: str) -> dict[str, dict[str, list[str]]]:
    return {
        "publish": {
            "allow": [
                f"{subjects.PREFIX}.svc.{cluster}.>",
                subjects.cluster_subject(cluster),
                # The agent's epoch claim (compare-and-set on its own claim subject).
                subjects.epoch_subject(cluster),
                *_JS_COMMON,
            ]
        },
        "subscribe": {"allow": ["_INBOX.>", subjects.resync_subject(cluster)]},
    }


def registry_permissions(replica: str) -> dict[str, dict[str, list[str]] | dict[str, int]]:
    return {
        "publish": {
            "allow": [subjects.probe_subject(replica), f"{subjects.PREFIX}.resync.*", *_JS_COMMON]
        },
        "subscribe": {"allow": ["_INBOX.>", f"{subjects.PREFIX}.api.>"]},
        # Replies to resolve/inventory requests go to the requester's inbox.
        "allow_responses": {"max": 1},
    }


def consumer_permissions() -> dict[str, dict[str, list[str]]]:
    """An inventory tool: asks the registry API and reads the stream, writes nothing."""
    return {
        "publish": {"allow": [subjects.RESOLVE, subjects.INVENTORY, *_JS_COMMON]},
        "subscribe": {"allow": ["_INBOX.>"]},
    }


def user_entry(user: str, password: str, permissions: dict[str, object]) -> str:
    """One ``authorization.users`` entry in nats-server's config syntax (JSON is valid there)."""
    return json.dumps({"user": user, "password": password, "permissions": permissions})


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("agent", "registry", "consumer"):
        print(
            "usage: syncmesh nats-permissions agent <cluster> | registry <replica> | consumer -",
            file=sys.stderr,
        )
        return 2
    kind, name = argv
    perms: dict[str, object]
    if kind == "agent":
        perms = dict(agent_permissions(name))
    elif kind == "registry":
        perms = dict(registry_permissions(name))
    else:
        perms = dict(consumer_permissions())
    print(json.dumps({"permissions": perms}, indent=2))
    return 0
