"""NATS permissions that give each agent only its own cluster's subjects.

One publisher per cluster (ANCHORS pain point 5: syncers deleting each other's
entries): an agent may publish service states and beats of its own cluster
and nothing else, so even a misconfigured or compromised agent cannot
overwrite another cluster's state. The registry validates subject against
payload as well, but only the server can stop the write itself.

``syncmesh nats-permissions agent east`` / ``... registry r1`` / ``... consumer -`` /
``... operator -`` print the ``permissions`` block for a nats-server
``authorization.users`` entry. Only the registry role owns the stream (create,
update, consumer delete); agents, tools and operators read it with ephemeral
consumers and direct gets. Nobody may delete or purge it.
"""

from __future__ import annotations

import json
import sys

from syncmesh import subjects

__all__ = [
    "agent_permissions",
    "registry_permissions",
    "consumer_permissions",
    "operator_permissions",
    "user_entry",
    "main",
]

_S = subjects.STREAM
# Reading the stream: ephemeral/ordered consumers and direct gets. No role but the
# owner may create, update, delete or purge the stream, and only the owner may delete
# consumers (ephemeral consumers of the others expire by themselves).
_JS_READ = [
    "$JS.API.INFO",
    f"$JS.API.STREAM.INFO.{_S}",
    f"$JS.API.CONSUMER.CREATE.{_S}",
    f"$JS.API.CONSUMER.CREATE.{_S}.>",
    f"$JS.API.CONSUMER.INFO.{_S}.>",
    f"$JS.API.DIRECT.GET.{_S}",
    f"$JS.API.DIRECT.GET.{_S}.>",
    f"$JS.API.STREAM.MSG.GET.{_S}",
    f"$JS.FC.{_S}.>",
]
# The stream owner (every registry replica): creates the stream and raises its
# replicas; ``ensure_stream`` itself never lowers a setting.
_JS_OWNER = [
    f"$JS.API.STREAM.CREATE.{_S}",
    f"$JS.API.STREAM.UPDATE.{_S}",
    f"$JS.API.CONSUMER.DELETE.{_S}.>",
]


def agent_permissions(cluster: str) -> dict[str, dict[str, list[str]]]:
    """One cluster's agent: its own service, beat and epoch subjects, and reads."""
    return {
        "publish": {
            "allow": [
                f"{subjects.PREFIX}.svc.{cluster}.>",
                subjects.cluster_subject(cluster),
                subjects.epoch_subject(cluster),
                # Standby agents of the cluster announce themselves; the leader counts them.
                subjects.standby_subject(cluster),
                *_JS_READ,
            ]
        },
        "subscribe": {
            "allow": [
                "_INBOX.>",
                subjects.resync_subject(cluster),
                subjects.standby_subject(cluster),
            ]
        },
    }


def registry_permissions(replica: str) -> dict[str, dict[str, list[str]] | dict[str, int]]:
    """A registry replica: owns the stream, reads everything, serves the API."""
    return {
        "publish": {
            "allow": [
                subjects.probe_subject(replica),
                f"{subjects.PREFIX}.resync.*",
                *_JS_READ,
                *_JS_OWNER,
            ]
        },
        "subscribe": {"allow": ["_INBOX.>", f"{subjects.PREFIX}.api.>"]},
        # Replies to resolve/inventory/status requests go to the requester's inbox.
        "allow_responses": {"max": 1},
    }


def consumer_permissions() -> dict[str, dict[str, list[str]]]:
    """An inventory tool: asks the registry API and reads the stream, writes nothing."""
    return {
        "publish": {"allow": [f"{subjects.PREFIX}.api.>", *_JS_READ]},
        "subscribe": {"allow": ["_INBOX.>"]},
    }


def operator_permissions() -> dict[str, dict[str, list[str]]]:
    """An operator's tools (``syncmesh retire-cluster``): may write for any cluster."""
    return {
        "publish": {
            "allow": [
                f"{subjects.PREFIX}.svc.>",
                subjects.CLUSTER_WILDCARD,
                subjects.EPOCH_WILDCARD,
                f"{subjects.PREFIX}.api.>",
                *_JS_READ,
            ]
        },
        "subscribe": {"allow": ["_INBOX.>"]},
    }


def user_entry(user: str, password: str, permissions: dict[str, object]) -> str:
    """One ``authorization.users`` entry in nats-server's config syntax (JSON is valid there)."""
    return json.dumps({"user": user, "password": password, "permissions": permissions})


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("agent", "registry", "consumer", "operator"):
        print(
            "usage: syncmesh nats-permissions agent <cluster> | registry <replica> "
            "| consumer - | operator -",
            file=sys.stderr,
        )
        return 2
    kind, name = argv
    perms: dict[str, object]
    if kind == "agent":
        perms = dict(agent_permissions(name))
    elif kind == "registry":
        perms = dict(registry_permissions(name))
    elif kind == "operator":
        perms = dict(operator_permissions())
    else:
        perms = dict(consumer_permissions())
    print(json.dumps({"permissions": perms}, indent=2))
    return 0
