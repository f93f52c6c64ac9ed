"""The agent trains itself: ModelingAgent + trace_graph.Trainer + a guarded LLM optimizer.

Per minibatch the Trainer runs the agent on each training item (``solve_traced``), scores the
answer against the label (rel 1e-6), and calls ``answer_node.backward(feedback)`` with the text from
``agent.training.feedback``; the optimizer then rewrites the trainable prompts (and optionally the
sanity code), the guard undoes invalid rewrites, and the Trainer scores the validation split,
keeping the best parameters and reverting regressions. This module adds what the agent needs
around that loop, without a second loop: data and the test-set guard, a per-step JSONL log (steps
and items), a PNG learning curve, a resumable checkpoint, and the params file with its provenance.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.answer import AgentAnswer, FormulationStyle
from agent.datasets import Problem
from agent.modeler import AgentOptions, AgentTrace, ModelingAgent
from agent.training.data import DEFAULT_TRAIN_DIR, DataSplit, benchmark_questions, prepare_data
from agent.training.feedback import ItemOutcome, item_feedback
from agent.training.guards import (
    MAX_HINTS,
    GuardedLessons,
    GuardedOPRO,
    GuardedOptimizer,
    GuardedOptoPrime,
    ParameterGuard,
    RejectedUpdate,
    agent_validators,
)
from agent.training.rotation import RotatingOptimizer
from trace_graph.context import graph_context
from trace_graph.llm.client import LLMClient, LLMUnavailableError
from trace_graph.llm.config import LLMConfig
from trace_graph.llm.usage import Usage
from trace_graph.nodes import ExceptionNode, Node, ParameterNode
from trace_graph.trainer import EvalOutcome, Example, StepRecord, Trainer

OptimizerName = Literal["optoprime", "opro", "lessons"]
ReplyFormat = Literal["json", "tags"]

PARAMS_TRAINING_KEY = "training"  # provenance block in the params file; Module.load ignores it
OPTIMIZER_BASE_URL_ENV = "OPTITRACE_OPTIMIZER_BASE_URL"
OPTIMIZER_MODEL_ENV = "OPTITRACE_OPTIMIZER_MODEL"
OPTIMIZER_API_KEY_ENV = "OPTITRACE_OPTIMIZER_API_KEY"

# What each style's formulation reads; parameters a run never reads get no feedback to learn from.
DEFAULT_PARAMETERS: dict[str, list[str]] = {
    "ir": [
        "modeling_hints",
        "system_prompt",
        "formulation_instructions",
        "worked_example",
        "repair_instructions",
    ],
    "code": [
        "modeling_hints",
        "system_prompt",
        "code_instructions",
        "code_worked_example",
        "repair_instructions",
    ],
}
# The embedded 1.5B optimizer rewrites a short text whole but truncates a 1,500-character one
# (measured: both its rewrites of formulation_instructions stopped mid-list), so it trains the hints.
SMALL_MODEL_PARAMETERS = ["modeling_hints"]
# What the lessons optimizer can train: text parameters holding '- ' lessons.
LESSON_PARAMETERS = frozenset({"modeling_hints"})
# A lesson is one sentence, so a rejected one is cheap to ask again; a rewrite gets one retry.
LESSON_GUARD_RETRIES = 3
SANITY_CODE = "sanity_rules.code"
# Optimizer prompt budgets (characters). The embedded model's 4,096 tokens hold the prompt, the
# ~1,400-character system text and a reply of up to 1,536 tokens.
PROMPT_BUDGET = 10_000
SMALL_PROMPT_BUDGET = 6_000

OBJECTIVE = (
    "The program is an optimization-modeling agent: a small LLM reads a word problem and writes a "
    "model that a solver solves. Improve the prompt variables so that more problems get the correct "
    "optimal objective on the first formulation. Keep every rule in #Constraints. Write general "
    "instructions that help on every problem: never quote a specific problem or its numbers."
)

LOG_STEPS = "steps.jsonl"
LOG_ITEMS = "items.jsonl"
LEARNING_CURVE = "learning_curve.png"
HISTORY_CSV = "history.csv"
CHECKPOINT = "checkpoint.json"
RUN_MANIFEST = "run.json"


class TrainSettings(BaseModel):
    """Everything a training run is given except the LLM endpoints."""

    model_config = ConfigDict(extra="forbid")

    train: str = Field(default=DEFAULT_TRAIN_DIR, description="dataset name, file, or folder")
    val: str | None = Field(default=None, description="None or the training set: a seeded held-out split")
    optimizer: OptimizerName = "optoprime"
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=4, ge=1)
    train_limit: int | None = Field(default=None, ge=1)
    val_limit: int | None = Field(default=20, ge=1, description="validation runs after every changed step")
    val_fraction: float = Field(default=0.25, gt=0, lt=1)
    threads: int = Field(default=1, ge=1)
    seed: int = 0
    out: Path = Path("params.json")
    log_dir: Path | None = Field(default=None, description="default: <out without suffix>-log next to out")
    allow_test_set: bool = False
    with_rejected: bool = Field(default=False, description="also the synthesized set's rejected items")
    style: FormulationStyle = "ir"
    max_repairs: int = Field(default=3, ge=0)
    parameters: list[str] | None = Field(default=None, description="agent parameter paths to train")
    train_code: bool = Field(default=False, description="also train the sanity_rules code")
    init_params: Path | None = Field(default=None, description="start from these parameters")
    memory_size: int = Field(default=2, ge=0, description="OptoPrime: past attempts shown")
    prompt_budget: int | None = Field(
        default=None, ge=2_000, description="optimizer prompt, characters (default: by optimizer model)"
    )
    rotate: bool | None = Field(
        default=None, description="one parameter per step, in turn (default: for the embedded model)"
    )
    reply_format: ReplyFormat = "json"
    optimizer_temperature: float | None = None
    resume: bool = False
    progress: bool = True

    @property
    def resolved_log_dir(self) -> Path:
        return self.log_dir if self.log_dir is not None else self.out.with_name(f"{self.out.stem}-log")

    def trained_parameter_paths(self) -> list[str]:
        chosen = list(self.parameters) if self.parameters else list(DEFAULT_PARAMETERS[self.style])
        if self.train_code and SANITY_CODE not in chosen:
            chosen.append(SANITY_CODE)
        return chosen


class DatasetSummary(BaseModel):
    name: str
    checksum: str
    items: int


class TrainReport(BaseModel):
    """What a run did; printed by ``optitrace train --json``."""

    params_path: Path
    log_dir: Path
    train_set: DatasetSummary
    val_set: DatasetSummary
    split_from_train: bool
    optimizer: OptimizerName
    agent_model: str
    optimizer_model: str
    trained_parameters: list[str]
    baseline_val_accuracy: float | None
    best_val_accuracy: float | None
    steps: int
    statuses: dict[str, int] = Field(description="accepted / reverted / unchanged / failed step counts")
    rejected_updates: int
    changed_parameters: list[str] = Field(description="parameters whose saved value differs from the start")
    warnings: list[str] = Field(default_factory=list)
    stopped: str | None = Field(default=None, description="why the run ended early (best params still saved)")
    seconds: float
    usage: Usage


class ItemLogEntry(BaseModel):
    """One line of items.jsonl: one agent run on one item, tagged with the step it belongs to."""

    step: int
    phase: Literal["train", "val"]
    outcome: ItemOutcome


class TrainItem(BaseModel):
    """A Trainer example's input: the problem and whether it is being trained or validated on."""

    model_config = ConfigDict(frozen=True)

    problem: Problem
    phase: Literal["train", "val"]


StepCallback = Callable[[StepRecord], None]


# --- endpoints ----------------------------------------------------------------------------------------
def optimizer_llm_config(
    agent_config: LLMConfig,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
) -> LLMConfig:
    """The optimizer's endpoint: arguments, else $OPTITRACE_OPTIMIZER_BASE_URL / _MODEL / _API_KEY,
    else the agent's own. A model name alone means another model on the agent's server."""
    base_url = base_url or os.environ.get(OPTIMIZER_BASE_URL_ENV) or None
    model = model or os.environ.get(OPTIMIZER_MODEL_ENV) or None
    api_key = api_key or os.environ.get(OPTIMIZER_API_KEY_ENV) or None
    if base_url is None or base_url.rstrip("/") == agent_config.base_url.rstrip("/"):
        changes: dict[str, Any] = {}
        if model is not None:
            changes["model"] = model
        if api_key is not None:
            changes["api_key"] = api_key
        return agent_config.model_copy(update=changes)
    # A different (usually stronger, hosted) endpoint: OpenAI-style defaults, the agent's cache file.
    return LLMConfig(
        base_url=base_url,
        model=model or "default",
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
        cache_path=agent_config.cache_path,
    )


# --- running the agent on items -------------------------------------------------------------------------
class AgentRunner:
    """The Trainer's ``workflow`` and ``evaluate`` for the agent, plus the per-item log."""

    def __init__(self, agent: ModelingAgent) -> None:
        self.agent = agent
        self._lock = threading.Lock()
        self._traces: dict[int, AgentTrace] = {}
        self._pending_items: list[tuple[str, ItemOutcome]] = []

    def workflow(self, item: TrainItem) -> Node:
        trace = self.agent.solve_traced(item.problem.question)
        with self._lock:
            self._traces[id(trace.answer_node)] = trace
        return trace.answer_node

    def evaluate(self, item: TrainItem, output: Node, example: Example) -> EvalOutcome:
        with self._lock:
            trace = self._traces.pop(id(output), None)
        answer = trace.answer if trace is not None else output.value
        if not isinstance(answer, AgentAnswer):
            raise TypeError(f"the agent's output is not an answer: {type(answer).__name__}")
        crash = output.explanation() if isinstance(output, ExceptionNode) else None
        side = [f for f in (trace.failures if trace is not None else []) if f is not output]
        outcome = item_feedback(
            item.problem, answer, crash=crash, side_failures=[f.explanation() for f in side]
        )
        if item.phase == "train":
            # These failures do not reach the answer node, so its backward() would not tell the
            # code that failed; validation runs must not leave feedback behind.
            for failure in side:
                failure.backward()
        with self._lock:
            self._pending_items.append((item.phase, outcome))
        return EvalOutcome(score=outcome.score, feedback=outcome.feedback)

    def drain_items(self) -> list[tuple[str, ItemOutcome]]:
        with self._lock:
            items, self._pending_items = self._pending_items, []
        return items


class LoggingTrainer(Trainer):
    """A Trainer that also writes the step and item logs and the learning curve after each step.

    The Trainer saves its checkpoint after the baseline and after every step; that is the hook used
    here (no per-step callback exists), so the logs are never behind the checkpoint.
    """

    def __init__(
        self,
        *args: Any,
        runner: AgentRunner,
        log_dir: Path,
        on_step: StepCallback | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.runner = runner
        self.log_dir = log_dir
        self.on_step = on_step
        self.logged_records = 0
        self.logged_rejections = 0

    def save_checkpoint(self, path: str | Path) -> None:
        super().save_checkpoint(path)
        self.flush_logs()

    def flush_logs(self) -> None:
        records = self.history.records
        items = self.runner.drain_items()
        step = records[-1].step if records else 0
        every_rejection: list[RejectedUpdate] = getattr(self.optimizer, "rejected", [])
        rejections = every_rejection[self.logged_rejections :]
        self.logged_rejections = len(every_rejection)
        with (self.log_dir / LOG_ITEMS).open("a", encoding="utf-8") as handle:
            for phase, outcome in items:
                entry = ItemLogEntry(step=step, phase=phase, outcome=outcome)  # type: ignore[arg-type]
                handle.write(entry.model_dump_json() + "\n")
        new = records[self.logged_records :]
        if not new:
            return
        with (self.log_dir / LOG_STEPS).open("a", encoding="utf-8") as handle:
            for record in new:
                line = record.model_dump(mode="json")
                line["train_outcomes"] = dict(Counter(o.kind for p, o in items if p == "train"))
                line["val_outcomes"] = dict(Counter(o.kind for p, o in items if p == "val"))
                line["rejected"] = [r.model_dump() for r in rejections]
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.logged_records = len(records)
        self.history.plot(self.log_dir / LEARNING_CURVE)
        self.history.to_csv(self.log_dir / HISTORY_CSV)
        if self.on_step is not None:
            for record in new:
                self.on_step(record)


# --- building the pieces -----------------------------------------------------------------------------
def is_small_model(config: LLMConfig) -> bool:
    """The embedded local model (4k context): it gets a smaller prompt and one parameter per step."""
    return (config.cache_scope or "").startswith("embedded:")


def build_optimizer(
    settings: TrainSettings,
    agent: ModelingAgent,
    llm: LLMClient,
    forbidden_texts: list[str],
) -> GuardedOptimizer | RotatingOptimizer:
    """The optimizer over the trained parameters, guarded; taking turns per parameter if rotating."""
    named = dict(agent.named_parameters())
    paths = settings.trained_parameter_paths()
    unknown = [path for path in paths if path not in named]
    if unknown:
        raise ValueError(f"the agent has no parameters {unknown}; it has {sorted(named)}")
    small = is_small_model(llm.config)
    budget = settings.prompt_budget or (SMALL_PROMPT_BUDGET if small else PROMPT_BUDGET)
    rotate = settings.rotate if settings.rotate is not None else small
    guard = ParameterGuard(agent_validators(agent), forbidden_texts)
    by_node: dict[ParameterNode, str] = {parameter: path for path, parameter in named.items()}
    rejected: list[RejectedUpdate] = []

    if settings.optimizer == "lessons" and not set(paths) <= LESSON_PARAMETERS:
        raise ValueError(
            f"the lessons optimizer trains {sorted(LESSON_PARAMETERS)}; "
            f"{sorted(set(paths) - LESSON_PARAMETERS)} hold no lessons (use optoprime or opro)"
        )

    def make(chosen_paths: list[str]) -> GuardedOptimizer:
        chosen = [named[path] for path in chosen_paths]
        others = [parameter for path, parameter in named.items() if path not in chosen_paths]
        temperature = settings.optimizer_temperature
        optimizer: GuardedOptimizer
        if settings.optimizer == "lessons":
            optimizer = GuardedLessons(
                chosen,
                llm,
                max_lessons=MAX_HINTS,
                objective=OBJECTIVE,
                prompt_budget=budget,
                temperature=temperature,
            )
            optimizer.setup_guard(guard, by_node, others, retries=LESSON_GUARD_RETRIES, rejected_log=rejected)
            return optimizer
        common: dict[str, Any] = {
            "objective": OBJECTIVE,
            "prompt_budget": budget,
            "temperature": temperature,
            "reply_format": settings.reply_format,
        }
        if settings.optimizer == "opro":
            # OPRO shows whole values in its history: a worked example must not be cut to 500 chars.
            optimizer = GuardedOPRO(chosen, llm, history_size=4, value_limit=2_000, **common)
        else:
            optimizer = GuardedOptoPrime(chosen, llm, memory_size=settings.memory_size, **common)
        optimizer.setup_guard(guard, by_node, also_clear=others, rejected_log=rejected)
        return optimizer

    if rotate and len(paths) > 1:
        return RotatingOptimizer([make([path]) for path in paths])
    return make(paths)


def _summary(name: str, checksum: str, items: list[Problem]) -> DatasetSummary:
    return DatasetSummary(name=name, checksum=checksum, items=len(items))


def _manifest(settings: TrainSettings, data: DataSplit) -> dict[str, Any]:
    """What must match for --resume to continue a run rather than mix two."""
    return {
        "train": [data.train_name, data.train_checksum, [p.id for p in data.train]],
        "val": [data.val_name, data.val_checksum, [p.id for p in data.val]],
        "optimizer": settings.optimizer,
        "style": settings.style,
        "parameters": settings.trained_parameter_paths(),
    }


def _prepare_log_dir(log_dir: Path, manifest: dict[str, Any], resume: bool) -> bool:
    """Create the log folder; True when an earlier run is resumed from its checkpoint."""
    log_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = log_dir / RUN_MANIFEST
    checkpoint = log_dir / CHECKPOINT
    if resume and checkpoint.is_file() and manifest_path.is_file():
        earlier = json.loads(manifest_path.read_text(encoding="utf-8"))
        if earlier != json.loads(json.dumps(manifest)):
            raise ValueError(
                f"{log_dir} holds a run on other data or settings; use another --log-dir or drop --resume"
            )
        return True
    for name in (LOG_STEPS, LOG_ITEMS, CHECKPOINT, LEARNING_CURVE, HISTORY_CSV):
        (log_dir / name).unlink(missing_ok=True)  # a new run starts new logs
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return False


def save_params(agent: ModelingAgent, path: Path, provenance: dict[str, Any]) -> None:
    """The agent's parameters as readable JSON (``Module.save``) plus where they came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    agent.save(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    document[PARAMS_TRAINING_KEY] = provenance
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- the run ---------------------------------------------------------------------------------------------
def train_agent(
    settings: TrainSettings,
    agent_llm: LLMClient,
    optimizer_llm: LLMClient,
    *,
    on_step: StepCallback | None = None,
    data: DataSplit | None = None,
) -> TrainReport:
    """Train the agent's prompts on ``settings.train``; save the best parameters to ``settings.out``.

    Raises TestSetError for a public test set (unless allowed), DatasetError for unusable data,
    LLMUnavailableError when an endpoint is down before anything was learned. An endpoint that dies
    mid-run ends the run early: the best parameters so far are saved and ``stopped`` says why.
    KeyboardInterrupt also saves them before it propagates.
    """
    started = time.perf_counter()
    if not settings.parameters and (settings.optimizer == "lessons" or is_small_model(optimizer_llm.config)):
        settings = settings.model_copy(update={"parameters": list(SMALL_MODEL_PARAMETERS)})
    if data is None:
        data = prepare_data(
            settings.train,
            settings.val,
            val_fraction=settings.val_fraction,
            seed=settings.seed,
            train_limit=settings.train_limit,
            val_limit=settings.val_limit,
            allow_test_set=settings.allow_test_set,
            with_rejected=settings.with_rejected,
        )
    options = AgentOptions(style=settings.style, mode="agent", max_repairs=settings.max_repairs)
    # A naming context of its own: the optimizer keys and shows parameters by node name, which must be
    # `system_prompt`, not `system_prompt_1` because another agent was made earlier in this process.
    with graph_context():
        agent = ModelingAgent(agent_llm, options, params=settings.init_params)
    initial = dict(agent.state_dict())
    # Prompts must not quote training or validation problems, nor any public benchmark's.
    questions = [p.question for p in [*data.train, *data.val]]
    questions += [q for found in benchmark_questions().values() for q in found]
    optimizer = build_optimizer(settings, agent, optimizer_llm, questions)
    runner = AgentRunner(agent)
    log_dir = settings.resolved_log_dir
    resumed = _prepare_log_dir(log_dir, _manifest(settings, data), settings.resume)
    trainer = LoggingTrainer(
        runner.workflow,
        runner.evaluate,
        optimizer,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        val_set=[TrainItem(problem=p, phase="val") for p in data.val],
        threads=settings.threads,
        seed=settings.seed,
        progress=settings.progress,
        runner=runner,
        log_dir=log_dir,
        on_step=on_step,
    )
    if resumed:
        trainer.load_checkpoint(log_dir / CHECKPOINT)
        trainer.logged_records = len(trainer.history.records)
    stopped: str | None = None
    try:
        trainer.fit(
            [TrainItem(problem=p, phase="train") for p in data.train], checkpoint=log_dir / CHECKPOINT
        )
    except LLMUnavailableError as error:
        if not trainer.history.records:  # not even the baseline: nothing to save
            raise
        stopped = f"LLM endpoint unavailable: {error}"
    except KeyboardInterrupt:
        _finish(trainer, agent, settings, data, agent_llm, optimizer_llm, initial, started, "interrupted")
        raise
    return _finish(trainer, agent, settings, data, agent_llm, optimizer_llm, initial, started, stopped)


def _finish(
    trainer: LoggingTrainer,
    agent: ModelingAgent,
    settings: TrainSettings,
    data: DataSplit,
    agent_llm: LLMClient,
    optimizer_llm: LLMClient,
    initial: dict[str, Any],
    started: float,
    stopped: str | None,
) -> TrainReport:
    """Best parameters in place, logs flushed, params saved; the report."""
    if trainer.best_val_score is not None:
        trainer.optimizer.load_state_dict(trainer.best_state)
    trainer.optimizer.zero_feedback()
    trainer.flush_logs()
    if trainer.history.records:
        trainer.history.plot(settings.resolved_log_dir / LEARNING_CURVE)
    records = trainer.history.records
    baseline = records[0].val_score if records else None
    steps = [r for r in records if r.status != "baseline"]
    usage = sum((r.usage for r in records), Usage())
    rejected = len(getattr(trainer.optimizer, "rejected", []))
    final = agent.state_dict()
    changed = [path for path, value in final.items() if initial.get(path) != value]
    report = TrainReport(
        params_path=settings.out,
        log_dir=settings.resolved_log_dir,
        train_set=_summary(data.train_name, data.train_checksum, data.train),
        val_set=_summary(data.val_name, data.val_checksum, data.val),
        split_from_train=data.split_from_train,
        optimizer=settings.optimizer,
        agent_model=agent_llm.config.model,
        optimizer_model=optimizer_llm.config.model,
        trained_parameters=settings.trained_parameter_paths(),
        baseline_val_accuracy=baseline,
        best_val_accuracy=trainer.best_val_score,
        steps=len(steps),
        statuses=dict(Counter(r.status for r in steps)),
        rejected_updates=rejected,
        changed_parameters=changed,
        warnings=data.warnings,
        stopped=stopped,
        seconds=round(time.perf_counter() - started, 3),
        usage=usage,
    )
    provenance = report.model_dump(
        mode="json",
        include={
            "train_set",
            "val_set",
            "split_from_train",
            "optimizer",
            "agent_model",
            "optimizer_model",
            "trained_parameters",
            "baseline_val_accuracy",
            "best_val_accuracy",
            "steps",
            "statuses",
            "stopped",
        },
    )
    provenance["style"] = settings.style
    provenance["rule"] = "rel_1e-6"
    provenance["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    save_params(agent, settings.out, provenance)
    return report
