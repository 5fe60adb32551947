"""NATS credentials that rotate, on a real nats-server: passwords and tokens from
files, NKey seeds, JWT creds files that expire, and mutual TLS with a client
certificate that is replaced (issue 11). Files are read again at every reconnect,
so nothing restarts."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import nats
import nkeys
import pytest

from edge_sync.config import EdgeConfig, FileSourceConfig, SourceConfig
from edge_sync.io.remote_state import read_last_states
from harness.certs import make_certs, make_client_cert
from harness.nats_auth import new_keypair, operator_setup
from harness.nats_peer import NatsPeer, nats_server
from syncmesh.nats_config import NatsConfig
from syncmesh_app.edge import EdgeAgent
from syncmesh_app.embedded.process import wait_until
from syncmesh_io.nats_connection import connect

pytestmark = [pytest.mark.peers, pytest.mark.security]

SERVICE = '[[services]]\nname = "{name}"\n[[services.instances]]\naddress = "10.0.0.1"\nport = 80\n'


def _reload_with(peer: NatsPeer, old: str, new: str) -> None:
    """Change the server's config in place and reload it (SIGHUP), as an operator does."""
    node = peer.nodes[0]
    node.config_path.write_text(node.config_path.read_text().replace(old, new))
    node.process.signal_group(signal.SIGHUP)


async def _round_trip(nc: nats.NATS, subject: str = "probe.rt") -> bool:
    sub = await nc.subscribe(subject)
    try:
        await nc.publish(subject, b"x")
        await nc.flush(timeout=2)
        await sub.next_msg(timeout=2)
        return True
    except Exception:  # noqa: BLE001 - not (yet) reconnected
        return False
    finally:
        await sub.unsubscribe()


async def test_agent_follows_a_rotated_password_file_without_losing_an_update(
    tmp_path: Path,
) -> None:
    users = {"agent": "first-secret", "admin": "admin-pw"}
    async with nats_server(workdir=tmp_path / "nats", users=users) as peer:
        secret = tmp_path / "nats-password"
        secret.write_text("first-secret\n")
        services = tmp_path / "services.toml"
        services.write_text(SERVICE.format(name="before"))
        config = EdgeConfig(
            cluster="east",
            beat_interval_s=0.5,
            nats=NatsConfig(servers=[peer.url], user="agent", password_file=str(secret)),
            source=SourceConfig(kind="file", file=FileSourceConfig(path=str(services))),
        )
        admin = await nats.connect(peer.url, user="admin", password="admin-pw")
        try:
            async with EdgeAgent(config) as agent:
                await agent.wait_synced(30)
                # Rotate: the new secret goes into the file, then the server drops the old
                # one (and with it the agent's connection).
                secret.write_text("second-secret\n")
                _reload_with(peer, "first-secret", "second-secret")
                services.write_text(SERVICE.format(name="before") + SERVICE.format(name="after"))

                async def published() -> bool:
                    states = await read_last_states(admin.jetstream(), "east", idle_timeout_s=1)
                    return ("default", "after") in states

                await wait_until(published, 60, what="update published after the rotation")
        finally:
            await admin.close()


async def test_token_file_is_read_again_on_reconnect(tmp_path: Path) -> None:
    async with nats_server(workdir=tmp_path / "nats", token="tok-1", jetstream=False) as peer:
        token = tmp_path / "token"
        token.write_text("tok-1")
        nc = await connect(NatsConfig(servers=[peer.url], token_file=str(token)))
        try:
            assert await _round_trip(nc)
            token.write_text("tok-2")
            _reload_with(peer, "tok-1", "tok-2")

            async def reconnected() -> bool:
                # The reload is asynchronous: the old connection may still work for a moment.
                return nc.stats["reconnects"] >= 1 and await _round_trip(nc)

            await wait_until(reconnected, 30, interval=0.5, what="reconnected with tok-2")
        finally:
            await nc.close()


async def test_nkey_seed_file_authenticates_and_a_wrong_key_is_refused(tmp_path: Path) -> None:
    seed, public = new_keypair(nkeys.PREFIX_BYTE_USER)
    other_seed, _ = new_keypair(nkeys.PREFIX_BYTE_USER)
    auth = f'authorization {{ users: [ {{ nkey: "{public.decode()}" }} ] }}'
    async with nats_server(workdir=tmp_path / "nats", extra_config=auth, jetstream=False) as peer:
        seed_file = tmp_path / "user.nk"
        seed_file.write_bytes(seed)
        nc = await connect(NatsConfig(servers=[peer.url], nkeys_seed=str(seed_file)))
        try:
            assert await _round_trip(nc)
        finally:
            await nc.close()
        wrong = tmp_path / "other.nk"
        wrong.write_bytes(other_seed)
        with pytest.raises(Exception):  # noqa: B017 - nats-py reports the auth error variously
            await nats.connect(
                peer.url, nkeys_seed=str(wrong), allow_reconnect=False, connect_timeout=2
            )


async def test_expiring_jwt_creds_are_reissued_in_place(tmp_path: Path) -> None:
    """The seed's operating model: user JWTs expire (24 h there, 4 s here); the file is
    re-issued before expiry and the server's expiry disconnect is followed by a
    reconnect with the new JWT."""
    operator = operator_setup()
    async with nats_server(
        workdir=tmp_path / "nats", extra_config=operator.server_config, jetstream=False
    ) as peer:
        creds = tmp_path / "agent.creds"
        user = operator.user_creds(creds, "agent-east", expires_in_s=4)
        nc = await connect(NatsConfig(servers=[peer.url], creds=str(creds)))
        try:
            assert await _round_trip(nc)
            operator.user_creds(creds, "agent-east", expires_in_s=3600, user=user)
            await asyncio.sleep(6)  # past the first JWT's expiry
            await wait_until(lambda: _round_trip(nc), 30, interval=0.5, what="round trip")
            assert nc.stats["reconnects"] >= 1, "the server must have expired the first JWT"
        finally:
            await nc.close()


async def test_mutual_tls_with_a_client_certificate_that_rotates_to_a_new_ca(
    tmp_path: Path,
) -> None:
    async with nats_server(
        workdir=tmp_path / "nats", tls=True, verify_clients=True, jetstream=False
    ) as peer:
        assert peer.certs is not None
        ca_dir = peer.certs.ca.parent
        cert, key = make_client_cert(ca_dir, "agent-east")
        # No client certificate: refused by the server.
        with pytest.raises(Exception):  # noqa: B017
            await connect(
                NatsConfig(servers=[peer.url], tls_ca=str(peer.certs.ca)), allow_reconnect=False
            )
        client_cert, client_key = tmp_path / "client.pem", tmp_path / "client-key.pem"
        client_cert.write_bytes(cert.read_bytes())
        client_key.write_bytes(key.read_bytes())
        cfg = NatsConfig(
            servers=[peer.url],
            tls_ca=str(peer.certs.ca),
            tls_cert=str(client_cert),
            tls_key=str(client_key),
        )
        nc = await connect(cfg)
        try:
            assert await _round_trip(nc)
            # The client CA rotates: the new certificate is signed by a new CA, and the
            # server (restarted with it) refuses certificates of the old one.
            new_ca = make_certs(tmp_path / "ca2")
            new_cert, new_key = make_client_cert(new_ca.ca.parent, "agent-east")
            client_key.write_bytes(new_key.read_bytes())
            client_cert.write_bytes(new_cert.read_bytes())
            node = peer.nodes[0]
            node.config_path.write_text(
                node.config_path.read_text().replace(
                    f'ca_file: "{peer.certs.ca}"', f'ca_file: "{new_ca.ca}"'
                )
            )
            await peer.stop_node(0)
            await peer.start_node(0)
            await wait_until(lambda: _round_trip(nc), 30, interval=0.5, what="mTLS reconnect")
            assert nc.stats["reconnects"] >= 1
        finally:
            await nc.close()
