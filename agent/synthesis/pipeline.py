"""The synthesis pipeline: generate -> label (HiGHS) -> back-translate -> dedup -> forward model.

For each planned item (family, seed, requested band, variant):

1. generate: try the knob levels whose instance lands in the requested band (scores are computed
   from the instance); none -> `out_of_band`.
2. label: `generate.label_instance`; a time-limit hit or solver error -> `unsolved`.
3. back-translate: `backtranslate.StoryWriter`; no passing story within the rounds -> `untranslated`.
4. dedup: the closest test item; above the threshold -> `duplicate` (never written as data).
   (An unexpected exception in any step ends that item alone as `error`, with the message.)
5. forward model + rejection sampling: a `Formulator` (the ModelingAgent in production) models the
   story from scratch; its answer must match the label under rel 1e-6 on |label|+1 (infeasible
   labels need an infeasible answer) -> `accepted`, else `rejected` with the reason: those are the
   hard cases, written to their own file.

Output is resumable: every outcome is appended (one line, flushed and fsynced) to the accepted or
rejected file and to a ledger next to the output; a rerun skips ids already there and repairs a
line cut short by an interruption. Accepted/rejected files use the question/answer JSONL format
`agent.datasets` loads (`optitrace eval --dataset FILE`), with provenance in extra fields.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent.datasets import Label
from agent.scoring import score
from agent.synthesis.backtranslate import BackTranslation, StoryWriter
from agent.synthesis.complexity import BANDS, Band, ComplexityScore, score_formulation
from agent.synthesis.dedup import ClosestMatch, DedupIndex
from agent.synthesis.families import MAX_LEVEL, Family, SynthInstance, Variant, get_family
from agent.synthesis.generate import InstanceLabel, label_instance
from solvers.result import SolveStatus
from trace_graph.llm.client import LLMUnavailableError

PIPELINE_VERSION = 1
Difficulty = Literal["easy", "medium", "hard", "all"]
Outcome = Literal["accepted", "rejected", "duplicate", "untranslated", "unsolved", "out_of_band", "error"]


# --- forward modeling ----------------------------------------------------------------------------
class ForwardResult(BaseModel):
    """What a formulator made of a story: the status and optimum of its own model."""

    status: str
    objective: float | None = None
    error: str | None = None
    llm_calls: int = 0
    repair_rounds: int = 0


class Formulator(Protocol):
    """`(question) -> ForwardResult`: models a story from scratch (no access to the label)."""

    def __call__(self, question: str) -> ForwardResult: ...


class AgentFormulator:
    """The production formulator: `ModelingAgent.solve`."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def __call__(self, question: str) -> ForwardResult:
        answer = self.agent.solve(question)
        return ForwardResult(
            status=str(answer.status),
            objective=answer.objective,
            error=answer.error,
            llm_calls=answer.usage.calls,
            repair_rounds=answer.repair_rounds,
        )


def forward_verdict(label: InstanceLabel, result: ForwardResult) -> tuple[bool, str]:
    """(matches, reason). The headline rule of agent.scoring: rel 1e-6 on |label| + 1."""
    status = result.status if result.status in {s.value for s in SolveStatus} else SolveStatus.ERROR.value
    truth = Label(
        status=label.status,  # type: ignore[arg-type]
        objective=label.objective,
        raw="" if label.objective is None else repr(label.objective),
    )
    card = score(truth, result.objective, status)
    if card.headline:
        return True, ""
    if label.status != "optimal":
        return False, f"label {label.status}, formulator said {result.status} ({result.objective})"
    if result.objective is None:
        detail = f": {result.error[:200]}" if result.error else ""
        return False, f"no optimum from the formulator (status {result.status}){detail}"
    return False, f"objective {result.objective:.10g} differs from the label {label.objective:.10g}"


# --- configuration and plan ----------------------------------------------------------------------
def companion_path(out: Path, suffix: str) -> Path:
    """A file kept beside the accepted items: `<out stem>.<suffix>` (rejected set, ledger, report)."""
    return out.with_name(f"{out.stem}.{suffix}")


def default_rejected_path(out: Path) -> Path:
    """Where the rejected items of a run writing accepted items to `out` go unless told otherwise."""
    return companion_path(out, "rejected.jsonl")


class SynthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    families: list[str]
    n: int = Field(ge=1, description="items planned per family")
    difficulty: Difficulty = "all"
    seed: int = 0
    out: Path
    rejected: Path | None = Field(default=None, description="default: <out stem>.rejected.jsonl")
    workers: int = Field(default=1, ge=1)
    infeasible_share: float = Field(default=0.0, ge=0, le=1)
    unbounded_share: float = Field(default=0.0, ge=0, le=1)
    time_limit: float = Field(default=30.0, gt=0, description="seconds per HiGHS solve")
    dedup: bool = True

    @property
    def rejected_path(self) -> Path:
        return self.rejected or default_rejected_path(self.out)

    @property
    def ledger_path(self) -> Path:
        return companion_path(self.out, "ledger.jsonl")


class ItemPlan(BaseModel):
    family: str
    seed: int
    band: Band
    variant: Variant

    @property
    def id(self) -> str:
        return f"{self.family}-{self.band}-{self.seed}"


def _unit(*parts: object) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:12], 16) / 16**12


def _variant(family: Family, seed: int, config: SynthConfig) -> Variant:
    draw = _unit("variant", family.name, seed)
    if draw < config.infeasible_share and "infeasible" in family.variants:
        return "infeasible"
    if draw < config.infeasible_share + config.unbounded_share and "unbounded" in family.variants:
        return "unbounded"
    return "feasible"


@functools.cache
def reachable_bands(name: str) -> tuple[Band, ...]:
    """The bands a family's knob levels land in (sizes depend on the level only, so seed 0 tells)."""
    family = get_family(name)
    levels = range(1, MAX_LEVEL + 1)
    found = {score_formulation(family.generate(0, level).formulation).band for level in levels}
    return tuple(band for band in BANDS if band in found)


def plan_items(config: SynthConfig) -> list[ItemPlan]:
    """n items per family, seeds seed..seed+n-1. With difficulty 'all' the band cycles by seed
    through the bands the family can reach (set cover, say, has no hard level). Seed-major order,
    so a run stopped early still covers every family and band evenly."""
    families = [
        (get_family(name), reachable_bands(name) if config.difficulty == "all" else ())
        for name in config.families
    ]
    plans = []
    for seed in range(config.seed, config.seed + config.n):
        for family, bands in families:
            band: Band = bands[seed % len(bands)] if bands else config.difficulty  # type: ignore[assignment]
            variant = _variant(family, seed, config)
            plans.append(ItemPlan(family=family.name, seed=seed, band=band, variant=variant))
    return plans


def pick_instance(plan: ItemPlan) -> tuple[SynthInstance, ComplexityScore] | None:
    """An instance of the family at a knob level whose scored band is the requested one."""
    family = get_family(plan.family)
    matching = []
    for level in range(1, MAX_LEVEL + 1):
        instance = family.generate(plan.seed, level, plan.variant)
        complexity = score_formulation(instance.formulation)
        if complexity.band == plan.band:
            matching.append((instance, complexity))
    if not matching:
        return None
    return matching[random.Random(_unit("level", plan.id)).randrange(len(matching))]


# --- one item ------------------------------------------------------------------------------------
class ItemResult(BaseModel):
    plan: ItemPlan
    outcome: Outcome
    reason: str = ""
    instance: SynthInstance | None = None
    complexity: ComplexityScore | None = None
    label: InstanceLabel | None = None
    story: BackTranslation | None = None
    closest: ClosestMatch | None = None
    forward: ForwardResult | None = None
    seconds: float = 0.0

    def stages(self) -> dict[str, bool]:
        return {
            "generated": self.instance is not None,
            "solved": self.label is not None,
            "translated": self.story is not None and self.story.passed,
        }


def answer_of(label: InstanceLabel) -> float | str:
    """The `answer` field agent.datasets reads: the optimum, "infeasible" or "unbounded"."""
    return label.objective if label.status == "optimal" and label.objective is not None else label.status


def run_item(
    plan: ItemPlan,
    config: SynthConfig,
    writer: StoryWriter,
    formulator: Formulator,
    index: DedupIndex | None,
) -> ItemResult:
    started = time.perf_counter()
    result = ItemResult(plan=plan, outcome="out_of_band")
    picked = pick_instance(plan)
    if picked is None:
        result.reason = f"no knob level of {plan.family} lands in the {plan.band} band"
        return _done(result, started)
    result.instance, result.complexity = picked
    outcome = label_instance(result.instance, time_limit=config.time_limit)
    if outcome.label is None:
        result.outcome, result.reason = "unsolved", outcome.dropped or "no label"
        return _done(result, started)
    result.label = outcome.label
    result.story = writer.write(result.instance)
    if not result.story.passed or result.story.story is None:
        last = result.story.history[-1].check if result.story.history else None
        detail = result.story.error or (last.summary() if last else "no story")
        result.outcome, result.reason = (
            "untranslated",
            f"no passing story in {result.story.rounds} round(s): {detail}",
        )
        return _done(result, started)
    if index is not None:
        result.closest = index.closest(result.story.story)
        if result.closest is not None and result.closest.duplicate:
            result.outcome = "duplicate"
            result.reason = f"near-duplicate of {result.closest.id} (similarity {result.closest.similarity})"
            return _done(result, started)
    result.forward = formulator(result.story.story)
    matches, why = forward_verdict(result.label, result.forward)
    result.outcome, result.reason = ("accepted", "") if matches else ("rejected", why)
    return _done(result, started)


def _done(result: ItemResult, started: float) -> ItemResult:
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def item_record(result: ItemResult) -> dict[str, Any]:
    """One JSONL row: question/answer for the loaders, the rest as provenance."""
    assert result.instance and result.label and result.story and result.complexity
    story = result.story
    record: dict[str, Any] = {
        "id": result.plan.id,
        "question": story.story,
        "answer": answer_of(result.label),
        "label_status": result.label.status,
        "family": result.plan.family,
        "difficulty": result.complexity.band,
    }
    if result.outcome == "rejected":
        record["reason"] = result.reason
    record["provenance"] = {
        "pipeline_version": PIPELINE_VERSION,
        "family": result.plan.family,
        "seed": result.plan.seed,
        "knob": result.instance.level,
        "variant": result.instance.variant,
        "domain": result.instance.domain,
        "complexity": result.complexity.model_dump(),
        "label": result.label.model_dump(exclude={"values"}),
        "solution": result.label.values,
        "formulation": result.instance.formulation.model_dump(mode="json"),
        "model": story.model,
        "backtranslation": {
            "style": story.style,
            "rounds": story.rounds,
            "persona": story.persona,
            "llm_calls": story.llm_calls,
            "checks": [
                {
                    "missing": [m.text for m in r.check.missing],
                    "invented": r.check.invented,
                    "passed": r.check.passed,
                }
                for r in story.history
            ],
        },
        "forward": None
        if result.forward is None
        else {**result.forward.model_dump(), "matches": result.outcome == "accepted"},
        "closest_test_match": None if result.closest is None else result.closest.model_dump(),
        "seconds": result.seconds,
    }
    return record


# --- files ---------------------------------------------------------------------------------------
class AppendOnlyJsonl:
    """Append one JSON object per line, flushed and fsynced, so an interruption loses at most
    the line being written; `repair()` drops such a cut-off last line before appending again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def repair(self) -> int:
        """Drop an incomplete or unreadable last line; returns the number of bytes removed."""
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        if not data:
            return 0
        keep = len(data)
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
        else:
            last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
            try:
                json.loads(data[last_start:])
            except ValueError:
                keep = last_start
        if keep < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(keep)
        return len(data) - keep

    def ids(self, skip_outcomes: frozenset[str] = frozenset()) -> set[str]:
        """Ids of the rows written so far, except rows whose `outcome` is in `skip_outcomes`."""
        if not self.path.exists():
            return set()
        found = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "id" in row and row.get("outcome") not in skip_outcomes:
                found.add(str(row["id"]))
        return found

    def append(self, row: dict[str, Any]) -> None:
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())


# --- the run -------------------------------------------------------------------------------------
class SynthSummary(BaseModel):
    planned: int = 0
    resumed: int = Field(default=0, description="items already in the output, skipped")
    generated: int = 0
    solved: int = 0
    translated: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    outcomes: dict[str, int] = Field(default_factory=dict)
    by_family: dict[str, dict[str, int]] = Field(default_factory=dict)
    by_band: dict[str, int] = Field(default_factory=dict, description="accepted items per band")
    llm_calls: int = 0
    seconds: float = 0.0
    out: str = ""
    rejected_out: str = ""
    ledger: str = ""
    model: str = ""
    stopped: str | None = None


Progress = Callable[[int, int, ItemResult | None], None]


def run_pipeline(
    config: SynthConfig,
    writer: StoryWriter,
    formulator: Formulator,
    index: DedupIndex | None = None,
    progress: Progress | None = None,
) -> SynthSummary:
    """Run (or resume) the plan; returns the summary of this run. LLMUnavailableError and
    KeyboardInterrupt stop it cleanly: what was finished is on disk, `stopped` says why."""
    accepted_file, rejected_file, ledger = (
        AppendOnlyJsonl(config.out),
        AppendOnlyJsonl(config.rejected_path),
        AppendOnlyJsonl(config.ledger_path),
    )
    for handle in (accepted_file, rejected_file, ledger):
        handle.repair()
    # Items that crashed are tried again on a rerun (the cause may be fixed); every other outcome
    # is final for its id.
    done = accepted_file.ids() | rejected_file.ids() | ledger.ids(skip_outcomes=frozenset({"error"}))
    plans = plan_items(config)
    todo = [p for p in plans if p.id not in done]
    summary = SynthSummary(
        planned=len(plans),
        resumed=len(plans) - len(todo),
        out=str(config.out),
        rejected_out=str(config.rejected_path),
        ledger=str(config.ledger_path),
        model=writer.client.config.model,
    )
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    finished = 0
    if progress:
        progress(0, len(todo), None)

    def record(result: ItemResult) -> None:
        nonlocal finished
        if result.outcome in ("accepted", "rejected"):
            (accepted_file if result.outcome == "accepted" else rejected_file).append(item_record(result))
        ledger.append(_ledger_row(result))
        outcomes[result.outcome] += 1
        stages = result.stages()
        summary.generated += stages["generated"]
        summary.solved += stages["solved"]
        summary.translated += stages["translated"]
        family = summary.by_family.setdefault(result.plan.family, {})
        family[result.outcome] = family.get(result.outcome, 0) + 1
        if result.outcome == "accepted" and result.complexity is not None:
            summary.by_band[result.complexity.band] = summary.by_band.get(result.complexity.band, 0) + 1
        summary.llm_calls += (result.story.llm_calls if result.story else 0) + (
            result.forward.llm_calls if result.forward else 0
        )
        finished += 1
        if progress:
            progress(finished, len(todo), result)

    def work(plan: ItemPlan) -> ItemResult:
        try:
            return run_item(plan, config, writer, formulator, index)
        except (LLMUnavailableError, KeyboardInterrupt):
            raise
        except Exception as error:  # one broken item must not end an hours-long run
            return ItemResult(plan=plan, outcome="error", reason=f"{type(error).__name__}: {error}"[:500])

    pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="synth")
    pending: set[Future[ItemResult]] = set()
    queue = list(reversed(todo))
    try:
        while queue or pending:
            while queue and len(pending) < config.workers:
                pending.add(pool.submit(work, queue.pop()))
            finished_now, pending = wait(pending, return_when=FIRST_COMPLETED)
            failures = [future.exception() for future in finished_now if future.exception() is not None]
            for future in finished_now:  # what finished is kept even when a neighbour failed
                if future.exception() is None:
                    record(future.result())
            if failures:
                raise failures[0]  # type: ignore[misc]
    except LLMUnavailableError as error:
        summary.stopped = f"LLM endpoint unavailable: {error}"
    except KeyboardInterrupt:
        summary.stopped = "interrupted"
    finally:
        pool.shutdown(wait=summary.stopped is None, cancel_futures=True)
    summary.accepted, summary.rejected, summary.duplicates = (
        outcomes["accepted"],
        outcomes["rejected"],
        outcomes["duplicate"],
    )
    summary.outcomes = dict(outcomes)
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary


def _ledger_row(result: ItemResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": result.plan.id,
        "family": result.plan.family,
        "seed": result.plan.seed,
        "band": result.plan.band,
        "variant": result.plan.variant,
        "outcome": result.outcome,
        "reason": result.reason,
        "seconds": result.seconds,
    }
    if result.instance is not None:
        row["knob"] = result.instance.level
    if result.complexity is not None:
        row["score"] = result.complexity.score
    if result.closest is not None:
        row["closest_test_match"] = {
            "dataset": result.closest.dataset,
            "id": result.closest.id,
            "similarity": result.closest.similarity,
        }
    if result.story is not None:
        row["story_rounds"] = result.story.rounds
        row["story_style"] = result.story.style
    return row
