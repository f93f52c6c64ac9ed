"""Trainer against the scripted server: steps change parameters, validation, reverting a regression,
threads with context propagation, checkpoints and resuming, the history's CSV and plot."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trace_graph import Node, bundle, graph_context, node
from trace_graph.llm import ChatRequest, LLMClient, ScriptedLLMServer
from trace_graph.optimizers import SECTION_TITLES, OptoPrime, split_sections
from trace_graph.trainer import EvalOutcome, Example, Trainer, TrainingHistory


@pytest.fixture(autouse=True)
def fresh_names() -> Iterator[None]:
    with graph_context():
        yield


@bundle
def scale(x: float, weight: float) -> float:
    """Multiply x by the weight."""
    return x * weight


TRAIN = [(x, 3 * x) for x in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
VALIDATION = [(x, 3 * x) for x in (7.0, 8.0)]


def closeness(x: float, output: Node, example: Example) -> EvalOutcome:
    error = abs(output.value - example.target)
    return EvalOutcome(score=1 / (1 + error), feedback=f"expected {example.target}, got {output.value}")


def reply(suggestion: dict[str, object]) -> str:
    return json.dumps({"reasoning": "from the feedback", "suggestion": suggestion})


def weight_trainer(client: LLMClient, **options: object) -> tuple[Trainer, Node]:
    weight = node(1.0, name="weight", trainable=True)
    settings: dict[str, object] = {"batch_size": 2, "epochs": 1, "val_set": VALIDATION, "progress": False}
    settings.update(options)
    trainer = Trainer(
        lambda x: scale(x, weight),
        closeness,
        OptoPrime([weight], client),
        **settings,  # type: ignore[arg-type]
    )
    return trainer, weight


def test_training_steps_validate_and_revert_a_regression(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add(reply({"weight": 2.0}), reply({"weight": 10.0}), reply({"weight": 3.0}))
    trainer, weight = weight_trainer(scripted_llm_client)
    history = trainer.fit(TRAIN)
    statuses = [record.status for record in history.records]
    assert statuses == ["baseline", "accepted", "reverted", "accepted"]
    baseline, better, worse, best = history.records
    assert baseline.val_score == pytest.approx(fmean_closeness(1.0))
    assert better.val_score == pytest.approx(fmean_closeness(2.0))
    assert worse.val_score == pytest.approx(fmean_closeness(10.0))
    assert baseline.val_score < better.val_score and worse.val_score < better.val_score
    assert worse.best_val_score == better.val_score and worse.changed == ["weight"]
    assert best.val_score == 1.0 and trainer.best_val_score == 1.0
    assert weight.value == 3.0 and trainer.best_state == {"weight": 3.0}
    assert worse.diff == "weight: 2.0 -> 10.0"
    # the step after the revert starts from the restored best value, not from 10.0
    third_prompt = split_sections(scripted_llm.requests[2].last_user_text, SECTION_TITLES)
    assert third_prompt["Variables"] == "(float) weight=2.0"
    # each step's feedback covers its whole minibatch, one entry per example
    assert len(third_prompt["Feedback"].splitlines()) == 2
    assert all(record.usage.calls == 1 for record in history.records[1:])  # one optimizer call each
    assert weight.feedback == []  # feedback is cleared after each step


def fmean_closeness(weight: float) -> float:
    return sum(1 / (1 + abs(x * weight - 3 * x)) for x, _ in VALIDATION) / len(VALIDATION)


def test_without_revert_the_best_parameters_are_restored_at_the_end(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add(reply({"weight": 3.0}), reply({"weight": 10.0}), reply({"weight": 9.0}))
    trainer, weight = weight_trainer(scripted_llm_client, revert_regressions=False)
    history = trainer.fit(TRAIN)
    assert [record.status for record in history.records] == ["baseline", "accepted", "accepted", "accepted"]
    assert weight.value == 3.0  # the best, although the last steps moved away from it


def test_a_failed_step_changes_nothing_and_training_goes_on(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add("no idea", "still no idea", reply({"weight": 3.0}), reply({}))
    trainer, weight = weight_trainer(scripted_llm_client)
    history = trainer.fit(TRAIN)
    assert [record.status for record in history.records] == ["baseline", "failed", "accepted", "unchanged"]
    failed = history.records[1]
    assert failed.errors and failed.val_score == history.records[0].val_score and failed.usage.calls == 2
    assert failed.raw_reply == "still no idea"  # what the optimizer wrote, for whoever reads the log
    assert history.records[3].val_score == 1.0 and weight.value == 3.0


def test_threads_carry_context_names_and_llm_usage(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    """The workflow itself calls the LLM; threads run examples in parallel in copies of the caller's
    context, so the step's usage tracker counts their calls and each example names nodes afresh."""
    instructions = node("Answer.", name="instructions", trainable=True)
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="missing")
    marker.set("from the caller")
    seen: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def respond(request: ChatRequest) -> str:
        if "#Variables" in request.last_user_text:
            return reply({"instructions": "Answer in capitals."})
        system = request.messages[0].text
        question = request.last_user_text
        return question.upper() if "capitals" in system else question

    scripted_llm.responder = respond

    @bundle
    def answer(question: str) -> str:
        """Ask the model."""
        messages = [
            {"role": "system", "content": instructions.value},
            {"role": "user", "content": question},
        ]
        return scripted_llm_client.chat(messages).text

    def evaluate(question: str, output: Node, example: Example) -> EvalOutcome:
        with lock:
            seen.append((marker.get(), output.name, threading.current_thread().name))
        right = output.value == example.target
        return EvalOutcome(score=float(right), feedback="right" if right else f"expected {example.target!r}")

    data = [(word, word.upper()) for word in ("alpha", "beta", "gamma", "delta")]
    trainer = Trainer(
        answer,
        evaluate,
        OptoPrime([instructions], scripted_llm_client),
        batch_size=4,
        val_set=data[:2],
        threads=2,
        progress=False,
    )
    history = trainer.fit(data)
    baseline, step = history.records
    assert (baseline.val_score, step.train_score, step.val_score, step.status) == (0.0, 0.0, 1.0, "accepted")
    assert instructions.value == "Answer in capitals."
    assert step.usage.calls == 4 + 1 + 2  # the batch, the optimizer, the validation set
    assert baseline.usage.calls == 2
    assert {(value, name) for value, name, _ in seen} == {("from the caller", "answer")}
    assert len({thread for _, _, thread in seen}) >= 2


def test_an_exception_output_with_no_feedback_text_explains_itself(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    @bundle(trainable=True)
    def parse(text: str) -> int:
        """Read a number written in digits or words."""
        return int(text)

    scripted_llm.add(reply({}))
    trainer = Trainer(
        parse,
        lambda text, output, example: EvalOutcome(score=0.0, feedback=""),
        OptoPrime([parse.parameter], scripted_llm_client),
        batch_size=1,
        progress=False,
    )
    trainer.fit(["seven"])
    feedback = split_sections(scripted_llm.requests[0].last_user_text, SECTION_TITLES)["Feedback"]
    assert "return int(text)  <--- (ValueError) invalid literal" in feedback


def test_a_workflow_must_return_a_node(scripted_llm_client: LLMClient) -> None:
    weight = node(1.0, name="weight", trainable=True)
    trainer = Trainer(lambda x: x * 2, closeness, OptoPrime([weight], scripted_llm_client), progress=False)
    with pytest.raises(TypeError, match="must return a node"):
        trainer.fit([(1.0, 3.0)])


# -- checkpoints and the history ---------------------------------------------------------------------


def test_checkpoint_saves_best_parameters_and_resumes(
    tmp_path: Path, scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    checkpoint = tmp_path / "run.json"
    scripted_llm.add(reply({"weight": 2.0}), reply({"weight": 10.0}), reply({"weight": 2.5}))
    first, _ = weight_trainer(scripted_llm_client)
    assert isinstance(first.optimizer, OptoPrime)
    first.optimizer.memory_size = 5
    first.fit(TRAIN, checkpoint=checkpoint)
    document = json.loads(checkpoint.read_text())
    assert document["best_state"] == {"weight": 2.5} and document["state"] == {"weight": 2.5}
    assert [record["status"] for record in document["history"]] == [
        "baseline",
        "accepted",
        "reverted",
        "accepted",
    ]

    # A new process: fresh parameters, the checkpoint restores them and the history; a second epoch
    # runs only the new batches.
    scripted_llm.add(reply({"weight": 3.0}), reply({}), reply({}))
    with graph_context():  # as in a new process: the parameter is called `weight` again
        resumed, weight = weight_trainer(scripted_llm_client, epochs=2)
    resumed.load_checkpoint(checkpoint)
    assert weight.value == 2.5 and resumed.best_val_score == first.best_val_score
    # OptoPrime's memory of its three attempts comes back too, so it does not retry them blind
    assert isinstance(resumed.optimizer, OptoPrime)
    assert len(first.optimizer.memory) == 3 and resumed.optimizer.memory == first.optimizer.memory
    requests_before = scripted_llm.request_count
    history = resumed.fit(TRAIN, checkpoint=checkpoint)
    assert scripted_llm.request_count - requests_before == 3
    assert [record.step for record in history.records] == list(range(7))
    assert [record.epoch for record in history.records[4:]] == [1, 1, 1]
    assert weight.value == 3.0 and json.loads(checkpoint.read_text())["best_state"] == {"weight": 3.0}

    mismatched, _ = weight_trainer(scripted_llm_client, batch_size=3)
    with pytest.raises(ValueError, match="batch_size=2"):
        mismatched.load_checkpoint(checkpoint)


def test_checkpoint_stores_code_as_lines(
    tmp_path: Path, scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    @bundle(trainable=True)
    def triple(x: float) -> float:
        """Three times x."""
        return x * 2

    fixed = "def triple(x: float) -> float:\n    return x * 3"
    scripted_llm.add(reply({"triple.code": fixed}))
    trainer = Trainer(
        triple, closeness, OptoPrime([triple.parameter], scripted_llm_client), batch_size=2, progress=False
    )
    trainer.fit([(1.0, 3.0), (2.0, 6.0)], checkpoint=tmp_path / "code.json")
    stored = json.loads((tmp_path / "code.json").read_text())["best_state"]["triple.code"]
    assert stored == ["def triple(x: float) -> float:", "    return x * 3"]
    triple.parameter.value = "def triple(x: float) -> float:\n    return 0"
    trainer.load_checkpoint(tmp_path / "code.json")
    assert triple.parameter.value == fixed and triple(2.0).value == 6.0


def test_history_csv_plot_and_json(
    tmp_path: Path, scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add(reply({"weight": 2.0}), reply({"weight": 10.0}), reply({"weight": 3.0}))
    trainer, _ = weight_trainer(scripted_llm_client)
    history = trainer.fit(TRAIN)
    lines = history.to_csv(tmp_path / "history.csv").splitlines()
    assert lines[0].startswith("step,epoch,batch,status,train_score,val_score,best_val_score,changed")
    assert lines[3].split(",")[3] == "reverted" and len(lines) == 5
    assert (tmp_path / "history.csv").read_text().splitlines() == lines
    image = history.plot(tmp_path / "curve.png")
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 5_000
    restored = TrainingHistory.model_validate_json(history.model_dump_json())
    assert restored == history
