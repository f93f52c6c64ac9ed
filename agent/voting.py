"""Self-consistency: group the objectives of k sampled formulations and take the majority.

Samples whose objectives agree within a relative tolerance count as one answer. Failed samples
(no objective) still count in the denominator: three failures and one success is not a confident
answer, even though the success is unopposed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Confidence = Literal["high", "medium", "low"]

DEFAULT_RELATIVE_TOLERANCE = 1e-6


class VoteGroup(BaseModel):
    """Samples whose objectives agree; `value` is the first member's objective."""

    value: float
    members: list[int] = Field(description="indices of the samples in this group, in sample order")

    @property
    def count(self) -> int:
        return len(self.members)


class VoteOutcome(BaseModel):
    samples: int
    groups: list[VoteGroup] = Field(description="largest first; ties keep the order first seen")
    failed: list[int] = Field(default_factory=list, description="samples without an objective")
    winner: VoteGroup | None = None
    tied: bool = False
    confidence: Confidence = "low"

    @property
    def chosen(self) -> VoteGroup | None:
        """The group to answer with: the winner, or on a tie the group seen first (confidence low)."""
        return self.winner or (self.groups[0] if self.groups else None)

    @property
    def agreement(self) -> float:
        """Share of all samples (failed ones included) that back the winner."""
        return self.winner.count / self.samples if self.winner and self.samples else 0.0

    def summary(self) -> str:
        if not self.groups:
            return f"no sample out of {self.samples} produced an objective"
        parts = [f"{g.value:.6g} x{g.count}" for g in self.groups]
        if self.failed:
            parts.append(f"failed x{len(self.failed)}")
        verdict = "tie" if self.tied else f"majority {self.winner.value:.6g}" if self.winner else "none"
        return f"votes: {', '.join(parts)} -> {verdict} (confidence {self.confidence})"


def near_equal(a: float, b: float, rel_tol: float = DEFAULT_RELATIVE_TOLERANCE) -> bool:
    """Relative comparison that stays meaningful around zero (scale at least 1)."""
    return abs(a - b) <= rel_tol * max(1.0, abs(a), abs(b))


def group_objectives(
    objectives: list[float | None], rel_tol: float = DEFAULT_RELATIVE_TOLERANCE
) -> tuple[list[VoteGroup], list[int]]:
    groups: list[VoteGroup] = []
    failed: list[int] = []
    for index, value in enumerate(objectives):
        if value is None:
            failed.append(index)
            continue
        # Compare with the group's first value, so a chain of small steps cannot drift a group.
        home = next((g for g in groups if near_equal(g.value, value, rel_tol)), None)
        if home is None:
            groups.append(VoteGroup(value=value, members=[index]))
        else:
            home.members.append(index)
    groups.sort(key=lambda g: -g.count)  # stable: equal counts keep first-seen order
    return groups, failed


def vote(objectives: list[float | None], rel_tol: float = DEFAULT_RELATIVE_TOLERANCE) -> VoteOutcome:
    """Majority over near-equal objectives.

    Confidence: high when at least two samples ran and at least 80% of them agree; medium for a
    strict majority, or a single sample that produced an objective; low for a tie, a plurality
    without majority, or no objective at all.
    """
    samples = len(objectives)
    groups, failed = group_objectives(objectives, rel_tol)
    if not groups:
        return VoteOutcome(samples=samples, groups=[], failed=failed, confidence="low")
    tied = len(groups) > 1 and groups[0].count == groups[1].count
    winner = None if tied else groups[0]
    confidence: Confidence = "low"
    if winner is not None:
        share = winner.count / samples
        if samples >= 2 and share >= 0.8:
            confidence = "high"
        elif share > 0.5 or samples == 1:
            confidence = "medium"
    return VoteOutcome(
        samples=samples, groups=groups, failed=failed, winner=winner, tied=tied, confidence=confidence
    )
