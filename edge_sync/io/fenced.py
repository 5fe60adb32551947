"""Fenced JetStream publishes, in order: the one way the agent sends states and beats.

Every message carries the claim fence (``EpochClaimer.fence_headers``, added by the
caller). ``FencedSender`` waits out a busy fence and remembers the order of what it
sent: a stream stores what one connection sends in order, so once a message sent
after a failed one is acknowledged, the failed one has landed or never will. The
publisher reads a key back (docs/digest.md) only then. Split out of
``edge_sync.io.publisher``.

A batch of states goes out with ``publish_many``: every message is written before any
acknowledgement is awaited, and the acknowledgements come back to one inbox
subscription of this sender, matched by sequence number. That is what nats-py's
``js.publish`` does per message (a request on its shared reply inbox), without a
``wait_for``, a random token and a subject check per message: half the CPU of an
initial sync's 5,000 publishes. The acknowledgements mean the same: a JetStream
error, "no stream answered" (status 503) and a timeout raise what ``js.publish``
raises.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from edge_sync.io.metrics import EdgeMetrics

__all__ = ["FENCE_BUSY", "FENCE_BUSY_RETRIES", "FencedSender", "Outbound"]

# One message to publish: subject, payload, headers.
Outbound = tuple[str, bytes, dict[str, str]]
NO_RESPONDERS = "503"

# Clustered streams: another fenced publish on the same check subject is in process.
FENCE_BUSY = 10164
FENCE_BUSY_RETRIES = 400


class FencedSender:
    """``js`` is the JetStream context of the current connection and ``nc`` that
    connection (both set by the publisher)."""

    def __init__(self, metrics: EdgeMetrics) -> None:
        self.metrics = metrics
        self.js: Any = None
        self.nc: Any = None
        # publish_many's acknowledgement inbox, per connection: sent number -> its future.
        self._ack_nc: Any = None
        self._ack_inbox = ""
        self._acks: dict[str, asyncio.Future[Any]] = {}
        # Each attempt is numbered when sent; the latest failed and acknowledged numbers.
        self._sent = 0
        self._last_failed = 0
        self._last_acked = 0

    @property
    def settled_since_failure(self) -> bool:
        """A message sent after the last failed one was acknowledged (or none failed)."""
        return self._last_acked > self._last_failed or self._last_failed == 0

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """Publish with the claim fence, waiting out the fence being busy.

        On a clustered stream nats-server lets one message at a time carry an
        expected-last-sequence check on a given subject and refuses the others
        at once with a constant "wrong last sequence" (10164); every message of
        this agent checks the same claim subject, so a pipelined batch collides
        with itself. That is not a fence failure (a newer claim answers 10071):
        the message is sent again after a short pause, in order.
        """
        for attempt in range(FENCE_BUSY_RETRIES):
            self._sent += 1
            sent = self._sent
            try:
                await self.js.publish(subject, data, headers=headers)
            except Exception as exc:
                self._last_failed = max(self._last_failed, sent)
                if not _fence_busy(exc) or attempt + 1 == FENCE_BUSY_RETRIES:
                    raise
                self.metrics.fence_busy.inc()
                await _busy_pause(attempt + 1)
            else:
                self._last_acked = max(self._last_acked, sent)
                return

    async def publish_many(
        self, messages: Sequence[Outbound], timeout_s: float
    ) -> list[BaseException | None]:
        """Publish every message in order, then await their acknowledgements (at most
        ``timeout_s``); per message, its error or None. Messages refused because the
        fence was busy go again together after a short pause, as ``publish`` does."""
        results = await self._send_batch(messages, timeout_s)
        for attempt in range(1, FENCE_BUSY_RETRIES):
            busy = [i for i, error in enumerate(results) if _fence_busy(error)]
            if not busy:
                break
            self.metrics.fence_busy.inc(len(busy))
            await _busy_pause(attempt)
            again = await self._send_batch([messages[i] for i in busy], timeout_s)
            for i, error in zip(busy, again, strict=True):
                results[i] = error
        return results

    async def _send_batch(
        self, messages: Sequence[Outbound], timeout_s: float
    ) -> list[BaseException | None]:
        nc = self.nc
        inbox = await self._inbox(nc)
        loop = asyncio.get_running_loop()
        results: list[BaseException | None] = [None] * len(messages)
        waiting: list[tuple[int, int, asyncio.Future[Any]]] = []
        try:
            for i, (subject, data, headers) in enumerate(messages):
                self._sent += 1
                sent = self._sent
                future: asyncio.Future[Any] = loop.create_future()
                self._acks[str(sent)] = future
                try:
                    await nc.publish(subject, data, reply=f"{inbox}.{sent}", headers=headers)
                except Exception as exc:
                    del self._acks[str(sent)]
                    self._last_failed = max(self._last_failed, sent)
                    results[i] = exc
                    continue
                waiting.append((i, sent, future))
            if waiting:
                await asyncio.wait([future for _, _, future in waiting], timeout=timeout_s)
        finally:
            for _, sent, future in waiting:
                self._acks.pop(str(sent), None)
                if not future.done():
                    future.cancel()
        for i, sent, future in waiting:
            error = _timeout() if future.cancelled() else _ack_error(future.result())
            if error is None:
                self._last_acked = max(self._last_acked, sent)
            else:
                self._last_failed = max(self._last_failed, sent)
            results[i] = error
        return results

    async def _inbox(self, nc: Any) -> str:
        """This connection's acknowledgement inbox (subscribed once per connection)."""
        if self._ack_nc is not nc:
            self._acks.clear()
            inbox = nc.new_inbox()
            await nc.subscribe(f"{inbox}.*", cb=self._on_ack)
            self._ack_nc, self._ack_inbox = nc, inbox
        return self._ack_inbox

    async def _on_ack(self, msg: Any) -> None:
        future = self._acks.get(msg.subject.rsplit(".", 1)[1])
        if future is not None and not future.done():
            future.set_result(msg)


def _ack_error(msg: Any) -> BaseException | None:
    """What ``js.publish`` would raise for this acknowledgement (None: stored)."""
    data = msg.data
    if not msg.headers and data.startswith(b'{"stream":') and b'"error"' not in data:
        return None  # a PubAck, as nats-server writes it: no need to parse 5,000 of them
    import nats.js.errors

    if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
        return nats.js.errors.NoStreamResponseError()
    try:
        ack = json.loads(msg.data)
    except ValueError as exc:
        return exc
    if isinstance(ack, dict) and "error" in ack:
        try:
            nats.js.errors.APIError.from_error(ack["error"])  # raises the matching subclass
        except nats.js.errors.APIError as exc:
            return exc
        return nats.js.errors.APIError(description=str(ack["error"]))
    return None


def _fence_busy(error: BaseException | None) -> bool:
    return getattr(error, "err_code", None) == FENCE_BUSY


async def _busy_pause(attempt: int) -> None:
    """The pause before sending again what a busy fence refused (0.5 ms, growing to 10)."""
    await asyncio.sleep(0.0005 * min(attempt, 20))


def _timeout() -> BaseException:
    import nats.errors

    return nats.errors.TimeoutError()
