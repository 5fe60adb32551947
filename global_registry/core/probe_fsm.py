"""The gateway health state machine, written as one table.

A gateway starts ``unknown``; its first probe decides up or down at once (a
cold replica should not wait rise x interval to answer). After that, ``fall``
consecutive failures take an up gateway down and ``rise`` consecutive
successes bring a down one back; ``failing`` and ``rising`` are the counting
states in between. ``failing`` still counts as up, ``rising`` as down.

Each row: (phase, outcome ok, guard) -> (next phase, counter action). The
guard ``AT_LIMIT`` holds when this outcome makes the count reach the threshold
of the phase's direction (``fall`` while up, ``rise`` while down); ``ALWAYS``
always holds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

__all__ = ["ProbePhase", "Guard", "CountAction", "Transition", "TRANSITIONS", "step", "UP_PHASES"]


class ProbePhase(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    FAILING = "failing"
    DOWN = "down"
    RISING = "rising"


UP_PHASES = frozenset({ProbePhase.UP, ProbePhase.FAILING})


class Guard(StrEnum):
    ALWAYS = "-"
    AT_LIMIT = "limit"


class CountAction(StrEnum):
    # The consecutive-outcome count starts over.
    RESET = "reset"
    # One more consecutive outcome of the same kind.
    COUNT = "count"


class Transition(NamedTuple):
    next_phase: ProbePhase
    counter: CountAction


P = ProbePhase
ALWAYS, AT_LIMIT = Guard.ALWAYS, Guard.AT_LIMIT
RESET, COUNT = CountAction.RESET, CountAction.COUNT
# fmt: off
TRANSITIONS: dict[tuple[ProbePhase, bool, Guard], Transition] = {
    # phase        ok     guard        ->  next       counter
    (P.UNKNOWN,    True,  ALWAYS):     Transition(P.UP,      RESET),
    (P.UNKNOWN,    False, ALWAYS):     Transition(P.DOWN,    RESET),
    (P.UP,         True,  ALWAYS):     Transition(P.UP,      RESET),
    (P.UP,         False, AT_LIMIT):   Transition(P.DOWN,    RESET),
    (P.UP,         False, ALWAYS):     Transition(P.FAILING, COUNT),
    (P.FAILING,    True,  ALWAYS):     Transition(P.UP,      RESET),
    (P.FAILING,    False, AT_LIMIT):   Transition(P.DOWN,    RESET),
    (P.FAILING,    False, ALWAYS):     Transition(P.FAILING, COUNT),
    (P.DOWN,       False, ALWAYS):     Transition(P.DOWN,    RESET),
    (P.DOWN,       True,  AT_LIMIT):   Transition(P.UP,      RESET),
    (P.DOWN,       True,  ALWAYS):     Transition(P.RISING,  COUNT),
    (P.RISING,     False, ALWAYS):     Transition(P.DOWN,    RESET),
    (P.RISING,     True,  AT_LIMIT):   Transition(P.UP,      RESET),
    (P.RISING,     True,  ALWAYS):     Transition(P.RISING,  COUNT),
}
# fmt: on


def step(phase: ProbePhase, count: int, ok: bool, rise: int, fall: int) -> tuple[ProbePhase, int]:
    """Apply one probe outcome; returns the next phase and its consecutive-outcome count."""
    threshold = fall if phase in UP_PHASES else rise
    reached = count + 1 >= threshold
    transition = TRANSITIONS.get((phase, ok, AT_LIMIT)) if reached else None
    if transition is None:
        transition = TRANSITIONS[(phase, ok, ALWAYS)]
    next_count = 0 if transition.counter is RESET else count + 1
    return transition.next_phase, next_count
