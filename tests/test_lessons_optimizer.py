"""The Lessons optimizer: one general rule per step, added to a text parameter of '- ' lessons.
All LLM traffic is real HTTP to the scripted server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from trace_graph import bundle, graph_context, node
from trace_graph.llm import LLMClient, ScriptedLLMServer, ScriptedReply
from trace_graph.optimizers import Lessons, with_lesson


@pytest.fixture(autouse=True)
def fresh_names() -> Iterator[None]:
    with graph_context():
        yield


@bundle
def answer(hints: str, question: str) -> str:
    """Answer the question following the hints."""
    return f"{question} -> 3"


def lesson(text: str, reasoning: str = "the limit was missed") -> str:
    return json.dumps({"reasoning": reasoning, "lesson": text})


def test_with_lesson_appends_dedups_and_drops_the_oldest() -> None:
    assert with_lesson("", "Write every limit as a constraint.", 3) == "- Write every limit as a constraint."
    two = with_lesson("- first\n* second", "  - third   rule ", 3)
    assert two == "- first\n- second\n- third rule"
    assert with_lesson(two, "THIRD rule", 3) == two  # already known: unchanged, bullets as they were
    assert with_lesson(two, "fourth", 3) == "- second\n- third rule\n- fourth"


def test_step_adds_one_lesson_from_the_feedback(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    hints = node("- Read every number.", name="hints", trainable=True)
    answer(hints, "how many?").backward("Wrong: the answer is 3 but should be 5; a limit was ignored.")
    scripted_llm.add(lesson("Every limit in the text becomes a constraint."))
    result = Lessons([hints], scripted_llm_client, objective="More right answers.").step()
    assert result.ok and result.changed == ["hints"]
    assert hints.value == "- Read every number.\n- Every limit in the text becomes a constraint."
    assert result.reasoning == "the limit was missed"
    (request,) = scripted_llm.requests
    assert request.messages[0].text.startswith("You improve a program by teaching it lessons.")
    prompt = request.last_user_text
    assert "- Read every number." in prompt and "a limit was ignored" in prompt
    assert "More right answers." in prompt
    assert request.response_format is not None  # schema-constrained servers get the reply shape


def test_a_repeated_lesson_changes_nothing(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    hints = node("- Read every number.", name="hints", trainable=True)
    answer(hints, "q").backward("wrong")
    scripted_llm.add(lesson("read every number."))
    result = Lessons([hints], scripted_llm_client).step()
    assert result.ok and not result.updates and hints.value == "- Read every number."


def test_a_broken_reply_is_re_asked_then_reported_without_a_change(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    hints = node("", name="hints", trainable=True)
    answer(hints, "q").backward("wrong")
    scripted_llm.add("no idea", json.dumps({"reasoning": "r"}))
    result = Lessons([hints], scripted_llm_client).step()
    assert hints.value == "" and not result.updates and "LLM call failed" in result.errors[0]
    assert len(scripted_llm.requests) == 2


def test_a_refused_request_is_an_error_and_no_feedback_is_a_skip(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    hints = node("", name="hints", trainable=True)
    assert Lessons([hints], scripted_llm_client).step().skipped
    answer(hints, "q").backward("wrong")
    scripted_llm.add(ScriptedReply.error(400, "context length exceeded"))
    result = Lessons([hints], scripted_llm_client).step()
    assert hints.value == "" and "context length exceeded" in result.errors[0]


def test_it_trains_exactly_one_text_parameter() -> None:
    with pytest.raises(ValueError, match="one text parameter"):
        Lessons([node("a", name="a", trainable=True), node("b", name="b", trainable=True)])
    with pytest.raises(ValueError, match="text parameter"):
        Lessons([node(3, name="weight", trainable=True)])


def test_a_lesson_that_was_taken_back_is_shown_as_tried(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    hints = node("", name="hints", trainable=True)
    optimizer = Lessons([hints], scripted_llm_client)
    answer(hints, "q").backward("wrong")
    scripted_llm.add(lesson("Check every sign."), lesson("Name each constraint after its limit."))
    optimizer.step()
    hints.value = ""  # what a trainer does when validation got worse
    optimizer.zero_feedback()
    answer(hints, "q").backward("still wrong")
    optimizer.step()
    first, second = (request.last_user_text for request in scripted_llm.requests)
    assert "taken back" in second and "- Check every sign." in second.split("#Tried")[1]
    assert "- Check every sign." not in first
    assert hints.value == "- Name each constraint after its limit."


def test_a_lesson_proposed_before_is_sent_back_and_sampled_again(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    hints = node("", name="hints", trainable=True)
    optimizer = Lessons([hints], scripted_llm_client, repeat_retries=1)
    answer(hints, "q").backward("wrong")
    scripted_llm.add(
        lesson("Check every sign of every constraint."),
        lesson("check every  sign of every constraint!"),  # the same lesson again
        lesson("Give each limit its own constraint."),
        lesson("Check every sign of each constraint."),
        lesson("Check every sign of every constraint."),
    )
    optimizer.step()
    hints.value = ""
    second = optimizer.step()
    assert second.changed == ["hints"] and hints.value == "- Give each limit its own constraint."
    retry = scripted_llm.requests[2]
    assert "added before and taken back" in retry.last_user_text and retry.temperature == 0.8
    assert scripted_llm.requests[1].temperature in (None, 0.0)
    hints.value = ""
    third = optimizer.step()  # two repeats with one retry allowed: an error, nothing changes
    assert hints.value == "" and not third.updates and "tried before" in third.errors[0]


def test_the_lessons_tried_survive_a_checkpoint(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    hints = node("", name="hints", trainable=True)
    optimizer = Lessons([hints], scripted_llm_client)
    answer(hints, "q").backward("wrong")
    scripted_llm.add(lesson("Check every sign."))
    optimizer.step()
    memory = json.loads(json.dumps(optimizer.memory_state()))  # what a checkpoint file holds
    hints.value = ""  # reverted, then the run stops
    restarted = Lessons([hints], scripted_llm_client)
    restarted.load_memory_state(memory)
    assert restarted.was_proposed("check every sign!")
    answer(hints, "q").backward("still wrong")
    scripted_llm.add(lesson("Name each constraint after its limit."))
    restarted.step()
    assert "- Check every sign." in scripted_llm.requests[-1].last_user_text.split("#Tried")[1]


def test_opro_history_survives_a_checkpoint(scripted_llm_client: LLMClient) -> None:
    from trace_graph.optimizers import OPRO

    prompt = node("be brief", name="prompt", trainable=True)
    optimizer = OPRO([prompt], scripted_llm_client)
    optimizer.record(0.5, "score: 0.5")
    prompt.value = "be exact"
    optimizer.record(0.8, "score: 0.8")
    restored = OPRO([prompt], scripted_llm_client)
    restored.load_memory_state(json.loads(json.dumps(optimizer.memory_state())))
    assert restored.history == optimizer.history and len(restored.history) == 2


def test_a_lesson_cut_at_the_length_bound_keeps_its_complete_clauses_or_is_asked_again(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    from trace_graph.optimizers.lessons import LESSON_MAX_CHARS, complete_lesson

    clauses = "Write every minimum requirement with >= and every capacity with <=, then check each sign"
    cut = (clauses + " against the words of the problem before you answer it " * 3)[:LESSON_MAX_CHARS]
    assert complete_lesson(cut) == "Write every minimum requirement with >= and every capacity with <=."
    stump = ("Always " + "write " * 40)[:LESSON_MAX_CHARS]
    assert complete_lesson(stump) is None
    assert complete_lesson("Short and whole") == "Short and whole"

    hints = node("", name="hints", trainable=True)
    optimizer = Lessons([hints], scripted_llm_client)
    answer(hints, "q").backward("wrong")
    scripted_llm.add(lesson(stump), lesson("Give each limit its own constraint."))
    optimizer.step()
    assert hints.value == "- Give each limit its own constraint."
    assert "cut off" in scripted_llm.requests[1].last_user_text
