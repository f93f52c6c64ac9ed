"""Train a workflow's parameters on a dataset with an LLM optimizer.

Per minibatch: run the workflow on each example (a thread pool; every task runs in a copy of the
caller's contextvars, so naming scopes and LLM usage trackers follow it), score each output with
``evaluate``, send each output its own feedback (the records accumulate on the parameters, and the
optimizer sees the whole batch at once), ``step()``, then score the validation set. The best
parameters seen so far are kept; a step whose validation score falls below the best is reverted.

The history (one record per step: scores, accepted/reverted, what changed, LLM usage) can be
written as CSV, plotted as a PNG learning curve, and saved with the best and current parameters in a
JSON checkpoint from which ``fit`` resumes where it stopped.
"""

from __future__ import annotations

import contextvars
import csv
import io
import json
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import fmean
from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trace_graph.context import graph_context
from trace_graph.llm.usage import Usage, track_usage
from trace_graph.nodes import ExceptionNode, ExecutionError, Node, ParameterNode
from trace_graph.optimizers.base import Optimizer, StepResult
from trace_graph.report import short_repr

CHECKPOINT_FORMAT = "optitrace.trainer/1"


class EvalOutcome(BaseModel):
    """How one output did: a score (higher is better) and feedback text for the optimizer."""

    score: float
    feedback: str


class Example(BaseModel):
    """One dataset item. Datasets may also hold ``(input, target)`` pairs, ``{"input": ...}`` dicts, or
    bare inputs."""

    input: Any
    target: Any = None


def as_example(item: Any) -> Example:
    if isinstance(item, Example):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return Example(input=item[0], target=item[1])
    if isinstance(item, dict) and "input" in item and set(item) <= {"input", "target"}:
        return Example(**item)
    return Example(input=item)


Workflow = Callable[[Any], Node]
Evaluate = Callable[[Any, Node, Example], EvalOutcome | tuple[float, str]]
StepStatus = Literal["baseline", "accepted", "reverted", "unchanged", "failed"]


class StepRecord(BaseModel):
    """One training step (or the baseline, step 0)."""

    step: int
    epoch: int
    batch: int
    status: StepStatus
    train_score: float | None = None  # mean over the minibatch, before the step
    val_score: float | None = None  # after the step (a reverted step shows the score it fell to)
    best_val_score: float | None = None
    changed: list[str] = Field(default_factory=list)
    diff: str = ""  # "name: old -> new; ..." (values shortened)
    errors: list[str] = Field(default_factory=list)
    reasoning: str = ""
    raw_reply: str = ""  # the optimizer's last reply as written: what to read when a step fails
    usage: Usage = Field(default_factory=Usage)  # every LLM call of the step: workflow and optimizer
    seconds: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


class TrainingHistory(BaseModel):
    records: list[StepRecord] = Field(default_factory=list)

    def to_csv(self, path: str | Path | None = None) -> str:
        """The records as CSV text (also written to ``path`` when given)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            [
                "step",
                "epoch",
                "batch",
                "status",
                "train_score",
                "val_score",
                "best_val_score",
                "changed",
                "llm_calls",
                "prompt_tokens",
                "completion_tokens",
                "seconds",
                "errors",
            ]
        )
        for record in self.records:
            writer.writerow(
                [
                    record.step,
                    record.epoch,
                    record.batch,
                    record.status,
                    "" if record.train_score is None else record.train_score,
                    "" if record.val_score is None else record.val_score,
                    "" if record.best_val_score is None else record.best_val_score,
                    ";".join(record.changed),
                    record.usage.calls,
                    record.usage.prompt_tokens,
                    record.usage.completion_tokens,
                    round(record.seconds, 3),
                    " | ".join(record.errors),
                ]
            )
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def plot(self, path: str | Path) -> Path:
        """A PNG (or any format matplotlib knows from the suffix) learning curve."""
        # Figure without pyplot: no global backend switch, safe in threads and headless runs.
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        figure = Figure(figsize=(7, 4), dpi=100)
        axes = figure.add_subplot()
        train = [(r.step, r.train_score) for r in self.records if r.train_score is not None]
        # Reverted steps are marked apart: the parameters in place after them kept the best score.
        validation = [
            (r.step, r.val_score) for r in self.records if r.val_score is not None and r.status != "reverted"
        ]
        best = [(r.step, r.best_val_score) for r in self.records if r.best_val_score is not None]
        reverted = [
            (r.step, r.val_score) for r in self.records if r.status == "reverted" and r.val_score is not None
        ]
        if train:
            axes.plot(*zip(*train, strict=True), "o-", color="tab:blue", label="train (minibatch)")
        if validation:
            axes.plot(*zip(*validation, strict=True), "s-", color="tab:orange", label="validation")
        if best:
            axes.step(
                *zip(*best, strict=True), "--", where="post", color="tab:green", label="best validation"
            )
        if reverted:
            axes.scatter(
                *zip(*reverted, strict=True), marker="x", s=80, color="tab:red", label="reverted", zorder=3
            )
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("step")
        axes.set_ylabel("score")
        axes.set_title("Training history")
        axes.grid(alpha=0.3)
        if train or validation:
            axes.legend(loc="best")
        target = Path(path)
        figure.savefig(target, bbox_inches="tight")
        return target


class Trainer:
    """``Trainer(workflow, evaluate, optimizer, batch_size=4, epochs=1, val_set=..., threads=2).fit(train)``.

    ``workflow(input)`` returns the output node of one run; ``evaluate(input, output, example)``
    returns an ``EvalOutcome`` (or a ``(score, feedback)`` pair). Without a ``val_set`` every step is
    accepted. An empty feedback text on an exception node sends the exception's own explanation.
    """

    def __init__(
        self,
        workflow: Workflow,
        evaluate: Evaluate,
        optimizer: Optimizer,
        *,
        batch_size: int = 4,
        epochs: int = 1,
        val_set: Sequence[Any] | None = None,
        threads: int = 1,
        seed: int = 0,
        revert_regressions: bool = True,
        progress: bool = True,
    ) -> None:
        if batch_size < 1 or epochs < 0 or threads < 1:
            raise ValueError("batch_size and threads must be >= 1 and epochs >= 0")
        self.workflow = workflow
        self.evaluate = evaluate
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.epochs = epochs
        self.val_set = [as_example(item) for item in val_set] if val_set is not None else None
        self.threads = threads
        self.seed = seed
        self.revert_regressions = revert_regressions
        self.progress = progress
        self.history = TrainingHistory()
        self.best_state: dict[str, Any] = optimizer.state_dict()
        self.best_val_score: float | None = None
        self._train_size: int | None = None

    # -- running the workflow ----------------------------------------------------------------------

    def run(self, examples: Sequence[Any]) -> list[tuple[Node, EvalOutcome]]:
        """Run and score examples (in parallel with ``threads`` > 1), in the order given."""
        items = [as_example(item) for item in examples]
        if self.threads == 1 or len(items) <= 1:
            return [self._run_one(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.threads, len(items))) as pool:
            # One context copy per task: a Context cannot be entered by two threads at once.
            futures = [pool.submit(contextvars.copy_context().run, self._run_one, item) for item in items]
            return [future.result() for future in futures]

    def score(self, examples: Sequence[Any]) -> float:
        """The mean score of the workflow on ``examples``."""
        return fmean(outcome.score for _, outcome in self.run(examples))

    def _run_one(self, example: Example) -> tuple[Node, EvalOutcome]:
        with graph_context():  # short, per-example names (`answer`, not `answer_731`)
            try:
                output = self.workflow(example.input)
            except ExecutionError as error:  # bundles with catch_execution_error=False
                output = error.node
            if not isinstance(output, Node):
                raise TypeError(
                    f"the workflow must return a node (a bundled call's output), got {type(output).__name__}"
                )
            outcome = self.evaluate(example.input, output, example)
        if isinstance(outcome, tuple):
            outcome = EvalOutcome(score=outcome[0], feedback=outcome[1])
        return output, outcome

    # -- training ----------------------------------------------------------------------------------

    def fit(self, train_set: Sequence[Any], *, checkpoint: str | Path | None = None) -> TrainingHistory:
        """Train for ``epochs``; with ``checkpoint`` the state is saved after every step.

        Batches already in the history are skipped: ``load_checkpoint`` then ``fit`` on the same
        data and settings resumes a run, and raising ``epochs`` continues a finished one.
        """
        examples = [as_example(item) for item in train_set]
        if not examples:
            raise ValueError("the training set is empty")
        if self._train_size is not None and self._train_size != len(examples):
            raise ValueError(
                f"the checkpoint was made on {self._train_size} training examples, not {len(examples)}"
            )
        self._train_size = len(examples)
        batches_per_epoch = -(-len(examples) // self.batch_size)
        done = {(r.epoch, r.batch) for r in self.history.records if r.status != "baseline"}
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, disable=not self.progress) as bar:
            task = bar.add_task("training", total=self.epochs * batches_per_epoch, completed=len(done))
            if not self.history.records:
                self._baseline()
                self._save_if(checkpoint)
            for epoch in range(self.epochs):
                order = list(range(len(examples)))
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
                for batch in range(batches_per_epoch):
                    if (epoch, batch) in done:
                        continue
                    chosen = [
                        examples[i] for i in order[batch * self.batch_size : (batch + 1) * self.batch_size]
                    ]
                    record = self._train_step(epoch, batch, chosen)
                    self._save_if(checkpoint)
                    bar.update(task, advance=1, description=self._describe(record, epoch))
        if self.val_set is not None and self.best_val_score is not None:
            self.optimizer.load_state_dict(self.best_state)  # end on the best parameters
        self.optimizer.zero_feedback()
        self._save_if(checkpoint)
        return self.history

    def _baseline(self) -> None:
        started = time.perf_counter()
        with track_usage() as tracker:
            score = self.score(self.val_set) if self.val_set else None
        self.best_state = self.optimizer.state_dict()
        self.best_val_score = score
        self.history.records.append(
            StepRecord(
                step=0,
                epoch=0,
                batch=0,
                status="baseline",
                val_score=score,
                best_val_score=score,
                usage=tracker.usage,
                seconds=time.perf_counter() - started,
            )
        )

    def _train_step(self, epoch: int, batch: int, examples: list[Example]) -> StepRecord:
        started = time.perf_counter()
        with track_usage() as tracker:
            self.optimizer.zero_feedback()
            results = self.run(examples)
            for output, outcome in results:
                if outcome.feedback.strip():
                    output.backward(outcome.feedback)
                elif isinstance(output, ExceptionNode):
                    output.backward()
            train_score = fmean(outcome.score for _, outcome in results)
            self.optimizer.observe_score(train_score)
            result = self.optimizer.step()
            self.optimizer.zero_feedback()  # the graphs of this batch can be freed now
            status, val_score = self._judge(result)
        record = StepRecord(
            step=len(self.history.records),
            epoch=epoch,
            batch=batch,
            status=status,
            train_score=train_score,
            val_score=val_score,
            best_val_score=self.best_val_score,
            changed=result.changed,
            diff="; ".join(
                f"{u.name}: {short_repr(u.old_value, 40)} -> {short_repr(u.new_value, 40)}"
                for u in result.updates
            ),
            errors=result.errors + ([result.skipped] if result.skipped else []),
            reasoning=result.reasoning,
            raw_reply=result.raw_reply or "",
            usage=tracker.usage,
            seconds=time.perf_counter() - started,
        )
        self.history.records.append(record)
        return record

    def _judge(self, result: StepResult) -> tuple[StepStatus, float | None]:
        """Validate the step's parameters; keep them as the best, or revert to the best."""
        if not result.updates:  # nothing changed: the current score still holds
            return ("failed" if result.errors else "unchanged"), self._current_val_score()
        if not self.val_set:
            self.best_state = self.optimizer.state_dict()
            return "accepted", None
        score = self.score(self.val_set)
        if self.best_val_score is None or score >= self.best_val_score:
            self.best_state = self.optimizer.state_dict()
            self.best_val_score = score
            return "accepted", score
        if self.revert_regressions:
            self.optimizer.load_state_dict(self.best_state)
            return "reverted", score
        return "accepted", score

    def _current_val_score(self) -> float | None:
        """The validation score of the parameters in place now."""
        if not self.history.records:
            return None
        last = self.history.records[-1]
        return last.best_val_score if last.status == "reverted" else last.val_score

    def _describe(self, record: StepRecord, epoch: int) -> str:
        best = "-" if self.best_val_score is None else f"{self.best_val_score:.3f}"
        train = "-" if record.train_score is None else f"{record.train_score:.3f}"
        return f"epoch {epoch + 1}/{self.epochs} · train {train} · best val {best} · {record.status}"

    # -- checkpoints -------------------------------------------------------------------------------

    def _save_if(self, path: str | Path | None) -> None:
        if path is not None:
            self.save_checkpoint(path)

    def save_checkpoint(self, path: str | Path) -> None:
        """History, best and current parameters as readable JSON (code as a list of lines)."""
        document = {
            "format": CHECKPOINT_FORMAT,
            "settings": {"batch_size": self.batch_size, "seed": self.seed, "train_size": self._train_size},
            "best_val_score": self.best_val_score,
            "best_state": self._encode(self.best_state),
            "state": self._encode(self.optimizer.state_dict()),
            "optimizer_memory": self.optimizer.memory_state(),
            "history": self.history.model_dump(mode="json")["records"],
        }
        Path(path).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore what ``save_checkpoint`` wrote: the history, the best and the current parameters,
        and the optimizer's memory (OptoPrime's past attempts, OPRO's history, the lessons tried)."""
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a trainer checkpoint (expected format {CHECKPOINT_FORMAT!r})")
        settings = document["settings"]
        if (settings["batch_size"], settings["seed"]) != (self.batch_size, self.seed):
            raise ValueError(
                f"the checkpoint used batch_size={settings['batch_size']} and seed={settings['seed']}; "
                f"this trainer has batch_size={self.batch_size} and seed={self.seed}"
            )
        self._train_size = settings["train_size"]
        self.history = TrainingHistory(records=document["history"])
        self.best_val_score = document["best_val_score"]
        self.best_state = self._decode(document["best_state"])
        self.optimizer.load_state_dict(self._decode(document["state"]))
        # checkpoints written before the memory was saved have none: the run resumes without it
        self.optimizer.load_memory_state(document.get("optimizer_memory", {}))

    def _encode(self, state: dict[str, Any]) -> dict[str, Any]:
        parameters = dict(zip(state, self._parameters_for(state), strict=True))
        encoded = {}
        for key, value in state.items():
            if parameters[key].is_code and isinstance(value, str):
                value = value.split("\n")  # one line per JSON string: checkpoints diff well
            try:
                json.dumps(value)
            except (TypeError, ValueError) as error:
                raise TypeError(f"parameter {key!r} holds a value JSON cannot store: {error}") from None
            encoded[key] = value
        return encoded

    def _decode(self, encoded: dict[str, Any]) -> dict[str, Any]:
        parameters = dict(zip(encoded, self._parameters_for(encoded), strict=True))
        state = {}
        for key, value in encoded.items():
            current = parameters[key]._value
            if parameters[key].is_code and isinstance(value, list):
                value = "\n".join(value)
            elif isinstance(current, tuple) and isinstance(value, list):  # JSON has no tuples
                value = tuple(value)
            state[key] = value
        return state

    def _parameters_for(self, state: dict[str, Any]) -> list[ParameterNode]:
        known = dict(self.optimizer.named_parameters())
        unknown = sorted(set(state) - set(known))
        if unknown:
            raise KeyError(f"the checkpoint names parameters this optimizer does not have: {unknown}")
        return [known[key] for key in state]
