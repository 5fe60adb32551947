"""Exponential backoff with jitter (tenacity) for every call to a source or to NATS.

Retries never stop: a source or NATS that is down is waited for, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

__all__ = ["forever"]


def forever(
    retry_on: tuple[type[BaseException], ...],
    on_error: Callable[[BaseException, int], None],
    initial_s: float = 0.2,
    max_s: float = 15.0,
    jitter_s: float = 0.5,
) -> AsyncRetrying:
    """Retry ``retry_on`` errors forever; ``on_error(exc, attempt)`` runs before each wait."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None:
            on_error(exc, state.attempt_number)

    return AsyncRetrying(
        # Full exponential growth capped at max_s, plus up to jitter_s so many
        # agents (or workers) that failed together do not retry in lockstep.
        wait=wait_exponential(multiplier=initial_s, max=max_s) + wait_random(0, jitter_s),
        retry=retry_if_exception_type(retry_on),
        before_sleep=before_sleep,
        reraise=True,
    )
