"""The gateway health state machine, written as one table.

A gateway starts ``unknown``; its first probe decides up or down at once (a
cold replica should not wait rise x interval to answer). After that, ``fall``
consecutive failures take an up gateway down and ``rise`` consecutive
successes bring a down one back; ``failing`` and ``rising`` are the counting
states in between. ``failing`` still counts as up, ``rising`` as down.

Each row: (state, outcome, guard) -> (next state, counter action). The guard
``"limit"`` holds when this outcome makes the count reach the threshold of the
state's direction (``fall`` while up, ``rise`` while down); ``"-"`` always holds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

__all__ = ["GatewayState", "Transition", "TRANSITIONS", "step", "UP_STATES"]


class GatewayState(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    FAILING = "failing"
    DOWN = "down"
    RISING = "rising"


UP_STATES = frozenset({GatewayState.UP, GatewayState.FAILING})


class Transition(NamedTuple):
    next_state: GatewayState
    # "reset": the count starts over; "count": one more consecutive outcome.
    counter: str


S = GatewayState
# fmt: off
TRANSITIONS: dict[tuple[GatewayState, bool, str], Transition] = {
    # state        ok     guard     ->  next       counter
    (S.UNKNOWN,    True,  "-"):     Transition(S.UP,      "reset"),
    (S.UNKNOWN,    False, "-"):     Transition(S.DOWN,    "reset"),
    (S.UP,         True,  "-"):     Transition(S.UP,      "reset"),
    (S.UP,         False, "limit"): Transition(S.DOWN,    "reset"),
    (S.UP,         False, "-"):     Transition(S.FAILING, "count"),
    (S.FAILING,    True,  "-"):     Transition(S.UP,      "reset"),
    (S.FAILING,    False, "limit"): Transition(S.DOWN,    "reset"),
    (S.FAILING,    False, "-"):     Transition(S.FAILING, "count"),
    (S.DOWN,       False, "-"):     Transition(S.DOWN,    "reset"),
    (S.DOWN,       True,  "limit"): Transition(S.UP,      "reset"),
    (S.DOWN,       True,  "-"):     Transition(S.RISING,  "count"),
    (S.RISING,     False, "-"):     Transition(S.DOWN,    "reset"),
    (S.RISING,     True,  "limit"): Transition(S.UP,      "reset"),
    (S.RISING,     True,  "-"):     Transition(S.RISING,  "count"),
}
# fmt: on


def step(
    state: GatewayState, count: int, ok: bool, rise: int, fall: int
) -> tuple[GatewayState, int]:
    """Apply one probe outcome; returns the next state and its consecutive-outcome count."""
    threshold = fall if state in UP_STATES else rise
    reached = count + 1 >= threshold
    transition = TRANSITIONS.get((state, ok, "limit")) if reached else None
    if transition is None:
        transition = TRANSITIONS[(state, ok, "-")]
    next_count = 0 if transition.counter == "reset" else count + 1
    return transition.next_state, next_count
