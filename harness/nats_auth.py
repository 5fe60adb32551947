"""NATS decentralised auth for tests: NKeys, and operator/account/user JWTs.

Real nats-server operator mode (``resolver: MEMORY``) with JWTs signed here by
the ``nkeys`` library, so creds files and their expiry are tested for real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys

__all__ = ["new_keypair", "UserKeys", "OperatorSetup", "operator_setup"]


def new_keypair(prefix: int) -> tuple[bytes, bytes]:
    """(seed, public key) of a fresh NKey of kind ``prefix`` (nkeys.PREFIX_BYTE_*)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(bytearray(seed)).public_key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(claims: dict[str, object], signer_seed: bytes) -> str:
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    body = dict(claims)
    body.pop("jti", None)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    signature = nkeys.from_seed(bytearray(signer_seed)).sign(signing_input.encode())
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class UserKeys:
    seed: bytes
    public: bytes


@dataclass
class OperatorSetup:
    """The server side (an ``extra_config`` block) and the account that signs users."""

    server_config: str
    account_seed: bytes
    account_public: bytes

    def user_creds(
        self, path: Path, name: str, expires_in_s: float | None = None, user: UserKeys | None = None
    ) -> UserKeys:
        """Write a creds file for ``user`` (a new NKey unless given), valid for
        ``expires_in_s`` seconds (None: no expiry); returns the user's keys."""
        if user is None:
            seed, public = new_keypair(nkeys.PREFIX_BYTE_USER)
            user = UserKeys(seed, public)
        now = int(time.time())
        claims: dict[str, object] = {
            "iat": now,
            "iss": self.account_public.decode(),
            "name": name,
            "sub": user.public.decode(),
            "nats": {
                "pub": {},
                "sub": {},
                "subs": -1,
                "data": -1,
                "payload": -1,
                "type": "user",
                "version": 2,
            },
        }
        if expires_in_s is not None:
            claims["exp"] = now + int(expires_in_s)
        token = _jwt(claims, self.account_seed)
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{token}\n"
            "------END NATS USER JWT------\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.seed.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        return user


def operator_setup() -> OperatorSetup:
    op_seed, op_public = new_keypair(nkeys.PREFIX_BYTE_OPERATOR)
    acc_seed, acc_public = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    now = int(time.time())
    operator_jwt = _jwt(
        {
            "iat": now,
            "iss": op_public.decode(),
            "name": "syncmesh-test-operator",
            "sub": op_public.decode(),
            "nats": {"type": "operator", "version": 2},
        },
        op_seed,
    )
    account_jwt = _jwt(
        {
            "iat": now,
            "iss": op_public.decode(),
            "name": "syncmesh",
            "sub": acc_public.decode(),
            "nats": {
                "limits": {
                    "subs": -1,
                    "data": -1,
                    "payload": -1,
                    "imports": -1,
                    "exports": -1,
                    "wildcards": True,
                    "conn": -1,
                    "leaf": -1,
                    "mem_storage": -1,
                    "disk_storage": -1,
                    "streams": -1,
                    "consumer": -1,
                },
                "type": "account",
                "version": 2,
            },
        },
        op_seed,
    )
    config = (
        f"operator: {operator_jwt}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{ {acc_public.decode()}: {account_jwt} }}\n"
    )
    return OperatorSetup(config, acc_seed, acc_public)
