"""The JetStream metadata in a delivered message's reply subject (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["AckInfo", "parse_ack_reply", "parse_ack_reply_bytes"]


class AckInfo(NamedTuple):
    stream_seq: int
    consumer_seq: int
    # When the server stored the message, Unix nanoseconds.
    stored_at_ns: int
    # Messages the consumer still has to deliver after this one.
    pending: int

    @property
    def stored_at(self) -> float:
        return self.stored_at_ns / 1e9


def _from_tokens(tokens: Sequence[str] | Sequence[bytes]) -> AckInfo | None:
    # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
    # v2 adds <domain>.<account hash> after ACK and a token at the end.
    if len(tokens) == 9:
        base = 2
    elif len(tokens) >= 11:
        base = 4
    else:
        return None
    try:
        return AckInfo(
            int(tokens[base + 3]),
            int(tokens[base + 4]),
            int(tokens[base + 5]),
            int(tokens[base + 6]),
        )
    except ValueError:
        return None


def parse_ack_reply(reply: str) -> AckInfo | None:
    return _from_tokens(reply.split("."))


def parse_ack_reply_bytes(reply: bytes) -> AckInfo | None:
    """The same from the raw wire bytes (the fast reader never decodes the reply subject)."""
    return _from_tokens(reply.split(b"."))
