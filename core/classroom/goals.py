"""An exercise's goal, in the task's own terms: "target accuracy ≥ 90 % with at most 5 000
trainable parameters" is ``goal=acc>=0.9,params<=5000`` in a link to the Train page.

A goal is conditions joined by commas, each a measure, ``>=`` or ``<=``, and a number:

    acc       accuracy on the target task's test split after training (0.9 = 90 %)
    bpc       bits per character on the target text after training (a text task's)
    params    trainable parameters
    forget    points (a share: 0.1 = 10 points) or bits the run lost on its source task

    goal = parse_goal("acc>=0.9,params<=5000")   # ValueError: one line naming what is wrong
    goal.check(record)                           # Verdict: met, missed, or None (no result)
    ranked(goal, records)                        # the runs that meet it, best first

A run is judged by the results it stored (core.store.outcome.RunOutcome); one that did not
finish, or lacks a measure (a text run for ``acc``), meets nothing.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from core.classroom import links
from core.store.outcome import RunOutcome
from core.store.records import RunRecord
from core.training.kinds import KINDS

GOAL = "goal"  # the link's parameter
MEASURES: dict[str, Callable[[RunOutcome], float | None]] = {
    "acc": lambda run: run.test_acc_after,
    "bpc": lambda run: run.test_bpc_after,
    "params": lambda run: None if run.trainable_params is None else float(run.trainable_params),
    "forget": lambda run: _forgotten(run),
}
_COMPARE = {">=": operator.ge, "<=": operator.le}
_CONDITION = re.compile(r"\s*([a-z]+)\s*(>=|<=)\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*")
MOST_CONDITIONS = 4  # a goal a student can read at a glance; a link's is bounded too


def _forgotten(run: RunOutcome) -> float | None:
    """How much worse the run does on its source task after training than before, in the
    headline metric's share or bits (never below 0)."""
    for field, lower_is_better in (("acc", False), ("bpc", True)):
        before = getattr(run, f"source_{field}_before")
        after = getattr(run, f"source_{field}_after")
        if before is not None and after is not None:
            lost = after - before if lower_is_better else before - after
            return max(0.0, lost)
    return None


@dataclass(frozen=True)
class Condition:
    """One part of a goal: ``measure`` compared (``op``: ">=" or "<=") with ``bound``."""

    measure: str
    op: str
    bound: float

    def met(self, run: RunOutcome) -> bool | None:
        """Whether the run meets it; None where the run has no such result."""
        value = MEASURES[self.measure](run)
        return None if value is None else _COMPARE[self.op](value, self.bound)

    @property
    def text(self) -> str:
        """As a link writes it: "acc>=0.9"."""
        return f"{self.measure}{self.op}{self.bound:g}"

    def said(self, kind: str) -> tuple[str, dict[str, str]]:
        """The catalog key of the condition in words ("goals.acc_ge": "target accuracy of at
        least {bound}") and its bound as a student of a task of `kind` reads it (90.0%, 5,000,
        2.31 bits)."""
        direction = "ge" if self.op == ">=" else "le"
        if self.measure == "params":
            bound = f"{self.bound:,.0f}"
        elif self.measure == "bpc":
            bound = KINDS["text"].metric.written(self.bound)
        elif self.measure == "acc":
            bound = KINDS["images"].metric.written(self.bound)
        else:  # forget: in the unit of the task's own metric
            bound = KINDS[kind].metric.written(self.bound)
        return f"goals.{self.measure}_{direction}", {"bound": bound}


@dataclass(frozen=True)
class Verdict:
    """A run against a goal: each condition met (True), missed (False) or not measured."""

    conditions: tuple[bool | None, ...]

    @property
    def met(self) -> bool | None:
        """True when every condition is met, False when one is missed, else None."""
        if False in self.conditions:
            return False
        return None if None in self.conditions else True


@dataclass(frozen=True)
class Goal:
    conditions: tuple[Condition, ...]

    @property
    def text(self) -> str:
        """As a link writes it, the parser's input: "acc>=0.9,params<=5000"."""
        return ",".join(condition.text for condition in self.conditions)

    def check(self, run: RunOutcome) -> Verdict:
        """The run against each condition; a run that did not finish meets none."""
        if run.status != "finished":
            return Verdict(tuple(False for _ in self.conditions))
        return Verdict(tuple(condition.met(run) for condition in self.conditions))


def from_link(params: Mapping[str, str | list[str]]) -> tuple[Goal | None, list[str]]:
    """A link's goal (its ``goal`` parameter, core.classroom.links.query_values' reading):
    (the goal or None, and what the link wrote for it when it cannot be read, for the page's
    warning; a repeated ``goal`` is unreadable)."""
    given = params.get(GOAL)
    if given is None:
        return None, []
    try:
        if isinstance(given, list | tuple):
            raise ValueError("goal is given more than once")
        return parse_goal(given), []
    except ValueError:
        return None, links.as_written(params, [GOAL])


def parse_goal(text: str) -> Goal:
    """A goal from a link's text. ValueError, one line, for anything else: an unknown measure,
    another comparison, a number that is not one, a share (acc, forget) outside [0, 1], more
    than MOST_CONDITIONS conditions or none."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts or len(parts) > MOST_CONDITIONS:
        raise ValueError(f"a goal has 1 to {MOST_CONDITIONS} conditions, comma-separated")
    conditions = []
    for part in parts:
        found = _CONDITION.fullmatch(part)
        if found is None or found[1] not in MEASURES:
            raise ValueError(
                f"not a condition of a goal: {part.strip()[:40]!r} (write e.g. acc>=0.9; "
                f"measures: {', '.join(MEASURES)})"
            )
        bound = float(found[3])
        if not math.isfinite(bound) or (found[1] in ("acc", "forget") and bound > 1):
            raise ValueError(f"{found[1]} is a share between 0 and 1 (0.9 = 90 %)")
        conditions.append(Condition(found[1], found[2], bound))
    return Goal(tuple(conditions))


def ranked(goal: Goal, runs: Iterable[RunRecord]) -> list[RunRecord]:
    """The runs that meet the goal, best first: by their task's headline metric (higher
    accuracy, fewer bits), then by fewer trainable parameters."""

    def order(run: RunRecord) -> tuple[float, float]:
        metric = KINDS[run.kind].metric
        value = getattr(run, f"test_{metric.field}_after")
        return (-metric.better_by(value, 0.0), float(run.trainable_params or 0))

    return sorted((run for run in runs if goal.check(run).met), key=order)
