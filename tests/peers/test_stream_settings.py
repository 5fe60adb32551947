"""Stream settings on a real nats-server: no process lowers replicas or limits, and
the owner is the only role that may change the stream at all (issue 10 #2, #3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from harness.nats_peer import NatsPeer, nats_server
from syncmesh import subjects
from syncmesh.permissions import (
    agent_permissions,
    consumer_permissions,
    operator_permissions,
    registry_permissions,
)
from syncmesh_io.nats_connection import (
    StreamSettingsError,
    check_stream,
    ensure_stream,
    join_stream,
)

pytestmark = [pytest.mark.peers, pytest.mark.security]


async def test_one_process_on_the_default_cannot_shrink_an_r3_stream(
    nats_cluster: NatsPeer,
) -> None:
    nc = await nats.connect(nats_cluster.urls)
    try:
        js = nc.jetstream()
        await ensure_stream(js, replicas=3)
        with pytest.raises(StreamSettingsError) as caught:
            await ensure_stream(js, replicas=1)  # a registry left on the default
        assert caught.value.reason == "stream-replicas"
        assert "nats.replicas" in caught.value.detail
        await join_stream(js, replicas=1)  # an agent on the default: fine, changes nothing
        await check_stream(js)
        info = await js.stream_info(subjects.STREAM)
        assert info.config.num_replicas == 3
    finally:
        await nc.close()


async def test_a_stream_with_a_limit_is_an_error_naming_it_and_is_left_alone(
    nats_peer: NatsPeer,
) -> None:
    nc = await nats.connect(nats_peer.url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=subjects.STREAM,
                subjects=list(subjects.STREAM_SUBJECTS),
                max_msgs_per_subject=1,
                max_age=60.0,
                allow_msg_ttl=True,
            )
        )
        for call in (ensure_stream(js), check_stream(js), join_stream(js)):
            with pytest.raises(StreamSettingsError) as caught:
                await call
            assert "max_age" in caught.value.detail
        info = await js.stream_info(subjects.STREAM)
        assert info.config.max_age == 60.0
    finally:
        await nc.close()


async def test_ensure_stream_creates_and_is_idempotent(nats_peer: NatsPeer) -> None:
    nc = await nats.connect(nats_peer.url)
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        await ensure_stream(js)
        info = await js.stream_info(subjects.STREAM)
        assert info.config.max_msgs_per_subject == 1 and info.config.allow_msg_ttl
    finally:
        await nc.close()


# Every JetStream API call that only the stream owner may make, with a payload the
# server would accept from the owner.
STREAM_CFG = b'{"name": "%s", "subjects": ["syncmesh.v2.svc.>"], "max_age": 1}' % (
    subjects.STREAM.encode()
)
DENIED_FOR_NON_OWNERS = [
    (f"$JS.API.STREAM.UPDATE.{subjects.STREAM}", STREAM_CFG),
    (f"$JS.API.STREAM.CREATE.{subjects.STREAM}", STREAM_CFG),
    (f"$JS.API.STREAM.DELETE.{subjects.STREAM}", b""),
    (f"$JS.API.STREAM.PURGE.{subjects.STREAM}", b""),
    (f"$JS.API.CONSUMER.DELETE.{subjects.STREAM}.registry-r1", b""),
]
DENIED_FOR_EVERYONE = DENIED_FOR_NON_OWNERS[2:4]


async def _denied(url: str, user: str, password: str, subject: str, payload: bytes) -> bool:
    """True when the server refuses ``user`` the publish (a permissions violation)."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(url, user=user, password=password, error_cb=on_error)
    try:
        with pytest.raises(Exception):  # noqa: B017 - refused: no reply ever comes
            await nc.request(subject, payload, timeout=1.0)
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.1)
        return any("permissions violation" in str(e).lower() for e in errors)
    finally:
        await nc.close()


async def test_only_the_registry_role_may_change_the_stream(tmp_path: Path) -> None:
    users = {"east": "pw-e", "tool": "pw-t", "ops": "pw-o", "reg": "pw-r"}
    perms = {
        "east": agent_permissions("east"),
        "tool": consumer_permissions(),
        "ops": operator_permissions(),
        "reg": registry_permissions("r1"),
    }
    async with nats_server(workdir=tmp_path / "nats", users=users, permissions=perms) as peer:  # type: ignore[arg-type]
        owner = await nats.connect(peer.url, user="reg", password="pw-r")
        try:
            await ensure_stream(owner.jetstream())
        finally:
            await owner.close()
        for user in ("east", "tool", "ops"):
            for subject, payload in DENIED_FOR_NON_OWNERS:
                assert await _denied(peer.url, user, users[user], subject, payload), (
                    f"{user} may {subject}"
                )
        for subject, payload in DENIED_FOR_EVERYONE:
            assert await _denied(peer.url, "reg", "pw-r", subject, payload), f"reg may {subject}"
        # The stream is untouched: no limit crept in.
        check = await nats.connect(peer.url, user="tool", password="pw-t")
        try:
            await check_stream(check.jetstream())
        finally:
            await check.close()
