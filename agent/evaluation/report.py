"""Turn run directories into the tables a paper would print: `report.md`, `results.csv`,
`accuracy.png` and `summary.json`, re-rendered from the records alone (no LLM needed).

Accuracy counts labelled items only (numeric and infeasible labels); an infeasible-labelled item
is correct iff the prediction is infeasible, and those items are also counted on their own so a
reader can see how much of the score they carry. Unlabelled items are run and counted but never
scored. Execution rate is over every item.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from agent.answer import AgentMode
from agent.evaluation.records import (
    RECORDS_NAME,
    DatasetRef,
    EvalRecord,
    ModelRef,
    ParamsRef,
    RecordLog,
    RunDirError,
    RunManifest,
    read_manifest,
)
from agent.scoring import HEADLINE_RULE, ScoringRule, rule_names, scoring_rules

REPORT_NAME = "report.md"
CSV_NAME = "results.csv"
CHART_NAME = "accuracy.png"
SUMMARY_NAME = "summary.json"
_MODE_ORDER = {"oneshot": 0, "agent": 1}
DEFAULT_PARAMS = "default"
# (model, params label, dataset, subset, mode): what one table row aggregates.
GroupKey = tuple[str, str, str, str, str]


class LoadedRun(BaseModel):
    run_dir: Path
    manifest: RunManifest
    records: list[EvalRecord]


class GroupSummary(BaseModel):
    """One row of the table: one model with one parameter set on one (sub)set in one mode."""

    model: str
    params: str = Field(default=DEFAULT_PARAMS, description="'default' or the trained parameters' file@sha")
    dataset: DatasetRef
    subset: str
    mode: AgentMode
    items: int
    labelled: int = Field(description="items with a numeric or an infeasible label: the accuracy denominator")
    infeasible_labelled: int
    infeasible_correct: int = Field(description="infeasible-labelled items predicted infeasible")
    unlabelled: int
    correct: dict[str, int]
    accuracy: dict[str, float | None] = Field(description="None when nothing is labelled")
    executed: int
    execution_rate: float
    errors: int = Field(description="items whose answer is an error (no usable model)")
    exceptions: int = Field(description="items whose solver raised; included in errors")
    mean_llm_calls: float
    mean_tokens: float
    mean_seconds: float
    cache_hits: int


class Lift(BaseModel):
    """Agent versus one-shot on the same labelled items of the same set and model."""

    model: str
    params: str = DEFAULT_PARAMS
    subset: str
    items: int
    oneshot: dict[str, float]
    agent: dict[str, float]
    lift: dict[str, float] = Field(description="agent - oneshot accuracy, per rule")
    fixed: int = Field(description="wrong one-shot, right with the agent (headline rule)")
    broken: int = Field(description="right one-shot, wrong with the agent (headline rule)")


class ParamsChange(BaseModel):
    """Trained parameters versus the defaults on the same labelled items, set, model and mode."""

    model: str
    subset: str
    mode: AgentMode
    params: str
    items: int
    before: dict[str, float]
    after: dict[str, float]
    change: dict[str, float] = Field(description="after - before accuracy, per rule")
    fixed: int = Field(description="wrong with the defaults, right when trained (headline rule)")
    broken: int = Field(description="right with the defaults, wrong when trained (headline rule)")


class WrongItem(BaseModel):
    model: str
    params: str = DEFAULT_PARAMS
    subset: str
    problem_id: str
    mode: AgentMode
    label: str
    predicted: str
    status: str
    note: str = ""


class RunSummary(BaseModel):
    runs: list[str]
    datasets: list[DatasetRef]
    models: list[ModelRef]
    headline_rule: str = HEADLINE_RULE
    rules: list[ScoringRule]
    groups: list[GroupSummary]
    lifts: list[Lift]
    params_changes: list[ParamsChange] = Field(default_factory=list)
    wrong: list[WrongItem]
    missing: int = Field(description="items the last session planned that have no record (stopped runs)")
    stopped: list[str] = Field(default_factory=list)

    @property
    def several_params(self) -> bool:
        """Runs with different parameters are compared: tables and charts then name the params."""
        return len({group.params for group in self.groups}) > 1


# --- loading and summarizing ---------------------------------------------------------------------
def load_run(run_dir: Path) -> LoadedRun:
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise RunDirError(f"{run_dir} has no manifest.json; is it an evaluation run directory?")
    records = RecordLog(run_dir / RECORDS_NAME).load()
    return LoadedRun(run_dir=run_dir, manifest=manifest, records=records)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def params_label(params: ParamsRef | None) -> str:
    """How a run's parameters are named in tables: the defaults, or file stem @ sha256 prefix."""
    return DEFAULT_PARAMS if params is None else f"{Path(params.path).stem}@{params.sha256[:8]}"


def summarize_group(
    model: str, dataset: DatasetRef, records: list[EvalRecord], params: str = DEFAULT_PARAMS
) -> GroupSummary:
    first = records[0]
    scored = [r for r in records if r.scored]
    infeasible = [r for r in scored if r.label_status == "infeasible"]
    correct = {rule: sum(r.correct_under(rule) for r in scored) for rule in rule_names()}
    return GroupSummary(
        model=model,
        params=params,
        dataset=dataset,
        subset=first.subset,
        mode=first.mode,
        items=len(records),
        labelled=len(scored),
        infeasible_labelled=len(infeasible),
        infeasible_correct=sum(r.correct_under(HEADLINE_RULE) for r in infeasible),
        unlabelled=len(records) - len(scored),
        correct=correct,
        accuracy={rule: (count / len(scored) if scored else None) for rule, count in correct.items()},
        executed=sum(r.executed for r in records),
        execution_rate=sum(r.executed for r in records) / len(records),
        errors=sum(r.status == "error" for r in records),
        exceptions=sum(r.exception is not None for r in records),
        mean_llm_calls=_mean([r.llm_calls for r in records]),
        mean_tokens=_mean([r.tokens for r in records]),
        mean_seconds=_mean([r.seconds for r in records]),
        cache_hits=sum(r.cache_hits for r in records),
    )


class _Paired(BaseModel):
    """Two record sets compared on the labelled items they share."""

    items: int
    before: dict[str, float]
    after: dict[str, float]
    fixed: int
    broken: int

    @property
    def change(self) -> dict[str, float]:
        return {rule: self.after[rule] - self.before[rule] for rule in self.before}


def _paired(before: list[EvalRecord], after: list[EvalRecord]) -> _Paired | None:
    old = {r.problem_id: r for r in before if r.scored}
    new = {r.problem_id: r for r in after if r.scored}
    shared = sorted(set(old) & set(new))
    if not shared:
        return None
    rules = rule_names()
    return _Paired(
        items=len(shared),
        before={rule: sum(old[i].correct_under(rule) for i in shared) / len(shared) for rule in rules},
        after={rule: sum(new[i].correct_under(rule) for i in shared) / len(shared) for rule in rules},
        fixed=sum(new[i].correct_under() and not old[i].correct_under() for i in shared),
        broken=sum(old[i].correct_under() and not new[i].correct_under() for i in shared),
    )


def _lift(model: str, params: str, subset: str, records: list[EvalRecord]) -> Lift | None:
    pair = _paired([r for r in records if r.mode == "oneshot"], [r for r in records if r.mode == "agent"])
    if pair is None:
        return None
    return Lift(
        model=model,
        params=params,
        subset=subset,
        items=pair.items,
        oneshot=pair.before,
        agent=pair.after,
        lift=pair.change,
        fixed=pair.fixed,
        broken=pair.broken,
    )


def _params_changes(groups: dict[GroupKey, list[EvalRecord]]) -> list[ParamsChange]:
    changes = []
    for (model, params, dataset, subset, mode), records in groups.items():
        baseline = groups.get((model, DEFAULT_PARAMS, dataset, subset, mode))
        if params == DEFAULT_PARAMS or baseline is None:
            continue
        pair = _paired(baseline, records)
        if pair is None:
            continue
        changes.append(
            ParamsChange(
                model=model,
                subset=subset,
                mode=mode,  # type: ignore[arg-type]
                params=params,
                change=pair.change,
                **pair.model_dump(),  # items, before, after, fixed, broken
            )
        )
    return sorted(changes, key=lambda c: (c.model, c.subset, _MODE_ORDER.get(c.mode, 9), c.params))


def _wrong_item(model: str, params: str, record: EvalRecord) -> WrongItem:
    label = _number(record.label_objective) if record.label_status == "optimal" else record.label_status
    predicted = _number(record.predicted_objective) if record.predicted_objective is not None else "-"
    return WrongItem(
        model=model,
        params=params,
        subset=record.subset,
        problem_id=record.problem_id,
        mode=record.mode,
        label=label,
        predicted=predicted,
        status=record.status.value,
        note=(record.error or "")[:160],
    )


def summarize(runs: Sequence[LoadedRun]) -> RunSummary:
    # Runs with other parameters stay apart: merging a trained run into the default one would
    # average away exactly the difference a reader is looking for.
    groups: dict[GroupKey, list[EvalRecord]] = defaultdict(list)
    datasets: dict[tuple[str, str], DatasetRef] = {}
    for run in runs:
        model = run.manifest.model.name
        params = params_label(run.manifest.params)
        for record in run.records:
            groups[(model, params, run.manifest.dataset.name, record.subset, record.mode)].append(record)
        datasets[(model, run.manifest.dataset.name)] = run.manifest.dataset

    def order(key: GroupKey) -> tuple[str, str, str, int, bool, str]:
        model, params, _, subset, mode = key
        return (model, key[2], subset, _MODE_ORDER.get(mode, 9), params != DEFAULT_PARAMS, params)

    summaries = [
        summarize_group(key[0], datasets[(key[0], key[2])], groups[key], key[1])
        for key in sorted(groups, key=order)
    ]
    lifts: list[Lift] = []
    by_subset: dict[tuple[str, str, str], list[EvalRecord]] = defaultdict(list)
    for (model, params, _, subset, _), records in groups.items():
        by_subset[(model, params, subset)].extend(records)
    for (model, params, subset), records in sorted(by_subset.items()):
        lift = _lift(model, params, subset, records)
        if lift is not None:
            lifts.append(lift)
    wrong = [
        _wrong_item(key[0], key[1], record)
        for key in sorted(groups, key=order)
        for record in sorted(groups[key], key=lambda r: _natural(r.problem_id))
        if record.scored and not record.correct_under()
    ]
    missing = 0
    stopped: list[str] = []
    for run in runs:
        if run.manifest.sessions:
            # Counted from the records, not the session's tally: a killed session never wrote its tally.
            last = run.manifest.sessions[-1]
            missing += len(last.planned_keys() - {record.key for record in run.records})
            if last.stopped:
                stopped.append(f"{run.run_dir}: {last.stopped}")
            elif last.finished is None:
                stopped.append(f"{run.run_dir}: the last session ended without finishing (killed?)")
    models = list({run.manifest.model.identity: run.manifest.model for run in runs}.values())
    unique_datasets = list({d.checksum: d for d in datasets.values()}.values())
    return RunSummary(
        runs=[str(run.run_dir) for run in runs],
        datasets=unique_datasets,
        models=models,
        rules=scoring_rules(),
        groups=summaries,
        lifts=lifts,
        params_changes=_params_changes(groups),
        wrong=wrong,
        missing=missing,
        stopped=stopped,
    )


def _natural(problem_id: str) -> tuple[str, int, str]:
    # "nl4opt/10" after "nl4opt/9": ids are usually "<set>/<row>".
    head, _, tail = problem_id.rpartition("/")
    return (head, int(tail), "") if tail.isdigit() else (head, -1, tail)


# --- rendering -----------------------------------------------------------------------------------
def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.6e}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(summary: RunSummary, runs: Sequence[LoadedRun]) -> str:
    rules = [rule.name for rule in summary.rules]
    several = summary.several_params

    def params_cell(params: str) -> list[str]:
        return [params] if several else []

    def comparison_cells(
        before: dict[str, float], after: dict[str, float], change: dict[str, float]
    ) -> list[str]:
        return [
            f"{_percent(before[rule])} → {_percent(after[rule])} ({100 * change[rule]:+.1f})"
            for rule in rules
        ]

    lines = ["# OptiTrace evaluation", ""]
    for run in runs:
        manifest = run.manifest
        options = manifest.agent_options
        agent = (
            f"style {options.style}, max_repairs {options.max_repairs}, samples {options.samples}"
            if options is not None
            else "custom solver"
        )
        params = (
            "default prompts"
            if manifest.params is None
            else (f"{manifest.params.path} (sha256 {manifest.params.sha256[:12]})")
        )
        finished = manifest.finished.isoformat(timespec="seconds") if manifest.finished else "not finished"
        lines += [
            f"- **Dataset**: {manifest.dataset.name}"
            + (f" split {manifest.dataset.split}" if manifest.dataset.split else "")
            + f", version {manifest.dataset.version}, sha256 `{manifest.dataset.checksum}`",
            f"- **Model**: {manifest.model.name} at {manifest.model.endpoint} "
            f"(identity {manifest.model.identity})",
            f"- **Agent**: {agent}; parameters: {params}",
            f"- **Run**: `{run.run_dir}`, started {manifest.started.isoformat(timespec='seconds')}, "
            f"finished {finished}, {len(run.records)} records, {len(manifest.sessions)} session(s)",
        ]
    lines += [
        f"- **Scoring**: headline {summary.headline_rule}; accuracy over labelled items; an infeasible "
        "label is matched only by an infeasible prediction; unlabelled items are not scored. The "
        "solver never sees labels: no label-guided retries.",
    ]
    if summary.missing or summary.stopped:
        lines.append(
            f"- **Incomplete**: {summary.missing} planned item(s) have no record yet; resume with --resume."
        )
        lines += [f"  - stopped: {_cell(reason)}" for reason in summary.stopped]
    lines += ["", "## Results (accuracy %, pass@1)", ""]
    header = [
        *["set", "model", *(["params"] if several else []), "mode", "n", "labelled"],
        "infeasible-labelled (right)",
        *rules,
        *["exec %", "errors", "LLM calls/item", "tokens/item", "s/item"],
    ]
    lines += [_row(header), _row(["---"] * len(header))]
    for g in summary.groups:
        lines.append(
            _row(
                [
                    g.subset,
                    g.model,
                    *params_cell(g.params),
                    g.mode,
                    str(g.items),
                    str(g.labelled),
                    f"{g.infeasible_labelled} ({g.infeasible_correct})",
                    *[_percent(g.accuracy[rule]) for rule in rules],
                    _percent(g.execution_rate),
                    str(g.errors),
                    f"{g.mean_llm_calls:.2f}",
                    f"{g.mean_tokens:.0f}",
                    f"{g.mean_seconds:.2f}",
                ]
            )
        )
    if summary.lifts:
        lines += ["", "## Agent lift over one-shot (same model, same items)", ""]
        header = [
            "set",
            "model",
            *(["params"] if several else []),
            "items",
            *[f"{rule} (oneshot → agent)" for rule in rules],
            "fixed",
            "broken",
        ]
        lines += [_row(header), _row(["---"] * len(header))]
        for lift in summary.lifts:
            cells = comparison_cells(lift.oneshot, lift.agent, lift.lift)
            lines.append(
                _row(
                    [
                        *[lift.subset, lift.model, *params_cell(lift.params), str(lift.items)],
                        *[*cells, str(lift.fixed), str(lift.broken)],
                    ]
                )
            )
    if summary.params_changes:
        lines += ["", "## Trained parameters vs default (same model, mode and items)", ""]
        header = [
            *["set", "model", "mode", "params", "items"],
            *[f"{rule} (default → trained)" for rule in rules],
            *["fixed", "broken"],
        ]
        lines += [_row(header), _row(["---"] * len(header))]
        for change in summary.params_changes:
            cells = comparison_cells(change.before, change.after, change.change)
            lines.append(
                _row(
                    [
                        *[change.subset, change.model, change.mode, change.params, str(change.items)],
                        *[*cells, str(change.fixed), str(change.broken)],
                    ]
                )
            )
    lines += ["", "## Scoring rules", "", _row(["rule", "check", "used by"]), _row(["---"] * 3)]
    lines += [_row([rule.name, rule.description, rule.used_by]) for rule in summary.rules]
    lines += ["", f"## Wrong items under {summary.headline_rule} ({len(summary.wrong)})", ""]
    if summary.wrong:
        header = ["id", "mode", *(["params"] if several else []), "label", "predicted", "status", "note"]
        lines += [_row(header), _row(["---"] * len(header))]
        lines += [
            _row([w.problem_id, w.mode, *params_cell(w.params), w.label, w.predicted, w.status, w.note])
            for w in summary.wrong
        ]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


CSV_FIELDS = [
    "dataset",
    "dataset_version",
    "dataset_checksum",
    "subset",
    "problem_id",
    "mode",
    "status",
    "predicted_objective",
    "label_status",
    "label_objective",
    "label_raw",
    "scored",
    "executed",
    "repair_rounds",
    "llm_calls",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "llm_seconds",
    "seconds",
    "error",
    "model",
    "params",
]


def write_results_csv(runs: Sequence[LoadedRun], path: Path) -> None:
    """One row per record, a `correct_<rule>` column per rule (empty when unscored)."""
    rules = rule_names()
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CSV_FIELDS, *[f"correct_{rule}" for rule in rules]])
        for run in runs:
            for record in sorted(
                run.records, key=lambda r: (_natural(r.problem_id), _MODE_ORDER.get(r.mode, 9))
            ):
                values = record.model_dump(mode="json")
                values["model"] = run.manifest.model.name
                values["params"] = params_label(run.manifest.params)
                row = [_csv_value(values.get(field)) for field in CSV_FIELDS]
                verdicts = [str(record.correct[rule]).lower() if record.scored else "" for rule in rules]
                writer.writerow([*row, *verdicts])


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):  # same spelling as the correct_<rule> columns
        return str(value).lower()
    return value


def plot_accuracy(summary: RunSummary, path: Path) -> None:
    """Grouped bars: one cluster per scoring rule (plus execution rate), one bar per set/mode."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    rules = [rule.name for rule in summary.rules]
    clusters = [*rules, "execution"]
    groups = summary.groups
    several_params = summary.several_params
    figure, axes = plt.subplots(figsize=(max(7.0, 1.6 * len(clusters) + 0.4 * len(groups)), 4.8))
    width = 0.8 / max(1, len(groups))
    for index, group in enumerate(groups):
        heights = [100 * (group.accuracy[rule] or 0.0) for rule in rules] + [100 * group.execution_rate]
        positions = [c + (index - (len(groups) - 1) / 2) * width for c in range(len(clusters))]
        label = f"{group.subset} / {group.mode}" + (f" ({group.model})" if len(summary.models) > 1 else "")
        if several_params:
            label += f" [{group.params}]"
        bars = axes.bar(positions, heights, width, label=label)
        axes.bar_label(bars, labels=[f"{h:.0f}" for h in heights], fontsize=7, padding=1)
    axes.set_xticks(range(len(clusters)), clusters)
    axes.set_ylabel("% of labelled items (execution: of all items)")
    axes.set_ylim(0, 112)
    models = ", ".join(model.name for model in summary.models)
    sets = ", ".join(f"{d.name} {d.version} ({d.checksum[:8]})" for d in summary.datasets)
    axes.set_title(f"{sets}\nmodel: {models}", fontsize=9)
    # Below the axes: inside, it would cover the tallest bars.
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(4, max(1, len(groups))))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def write_report(run_dirs: Sequence[Path], out_dir: Path | None = None) -> RunSummary:
    """Render report.md, results.csv, accuracy.png and summary.json from the records on disk,
    into `out_dir` (default: the single run's own directory)."""
    if not run_dirs:
        raise ValueError("no run directory given")
    runs = [load_run(Path(run_dir)) for run_dir in run_dirs]
    if out_dir is None:
        if len(runs) > 1:
            raise ValueError("a report over several runs needs an output directory")
        out_dir = runs[0].run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    (out_dir / REPORT_NAME).write_text(render_markdown(summary, runs), encoding="utf-8")
    write_results_csv(runs, out_dir / CSV_NAME)
    if summary.groups:
        plot_accuracy(summary, out_dir / CHART_NAME)
    (out_dir / SUMMARY_NAME).write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    return summary
