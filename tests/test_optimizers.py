"""OptoPrime and OPRO: prompt content, bounded prompts, reply parsing through the scripted server,
typed updates, bad replies, memory, OPRO's history. All LLM traffic is real HTTP to 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from trace_graph import ExceptionNode, Module, Node, bundle, graph_context, node
from trace_graph.llm import LLMClient, LLMUnavailableError, ScriptedLLMServer, ScriptedReply
from trace_graph.optimizers import (
    OPRO,
    SECTION_TITLES,
    OptoPrime,
    score_in_feedback,
    split_sections,
)
from trace_graph.optimizers.base import REASONING_MAX_CHARS


@pytest.fixture(autouse=True)
def fresh_names() -> Iterator[None]:
    with graph_context():
        yield


@bundle
def add(a: float, b: float) -> float:
    """Add a and b."""
    return a + b


@bundle
def multiply(a: float, b: float) -> float:
    """Multiply a by b."""
    return a * b


def sections_of(optimizer: OptoPrime | OPRO, titles: tuple[str, ...] = SECTION_TITLES) -> dict[str, str]:
    system, user = optimizer.construct_prompt()
    assert system.role == "system" and user.role == "user"
    return split_sections(user.content, titles)


def reply(suggestion: dict[str, object], reasoning: str = "because") -> str:
    return json.dumps({"reasoning": reasoning, "suggestion": suggestion})


# -- the prompt --------------------------------------------------------------------------------------


def test_prompt_shows_every_section_with_meaningful_names() -> None:
    @bundle(trainable=True)
    def scale(value: float) -> float:
        """Scale a value into the target range."""
        return value * 2

    weight = node(
        5, name="weight", trainable=True, constraint="a positive integer", description="the first term"
    )
    offset = node(1, name="offset")
    total = add(weight, offset)
    result = scale(multiply(total, node(3, name="factor")))
    result.backward("The result should be 10, it is 36.")

    optimizer = OptoPrime([weight, scale.parameter], objective="Reach exactly 10.")
    system, user = optimizer.construct_prompt()
    assert '"suggestion"' in system.content and '"reasoning"' in system.content
    sections = split_sections(user.content, SECTION_TITLES)
    assert list(sections) == [title for title in SECTION_TITLES if title != "Past attempts"]
    assert "The variables you may change: `weight`, `scale.code`." in sections["Instruction"]
    assert "Objective: Reach exactly 10." in sections["Instruction"]
    assert sections["Code"].splitlines() == [
        "add = add(a=weight, b=offset)",
        "multiply = multiply(a=add, b=factor)",
        "scale = scale(value=multiply)  # also uses: scale.code",
    ]
    assert "[add] def add(a: float, b: float) -> float: Add a and b." in sections["Documentation"]
    assert "Scale a value into the target range." in sections["Documentation"]
    variables = sections["Variables"]
    assert "(int) weight=5" in variables
    assert "(code) scale.code:\ndef scale(value: float) -> float:" in variables
    assert "return value * 2" in variables
    assert "(weight) the first term Constraint: a positive integer" in sections["Constraints"]
    assert "keep the signature: def scale(value: float) -> float:" in sections["Constraints"]
    assert sections["Inputs"].splitlines() == ["(int) offset=1", "(int) factor=3"]
    assert sections["Others"].splitlines() == ["(int) add=6", "(int) multiply=18"]
    assert sections["Outputs"] == "(int) scale=36"
    assert sections["Feedback"] == "The result should be 10, it is 36."
    assert "float0" not in user.content and "__code" not in user.content


def test_prompt_of_a_failed_call_shows_the_error_and_its_line() -> None:
    @bundle(trainable=True)
    def parse(text: str) -> int:
        """Read a number."""
        return int(text)

    failed = parse("twelve")
    assert isinstance(failed, ExceptionNode)
    failed.backward("It must read words too.")  # custom text: the marked source comes from the report
    sections = sections_of(OptoPrime([parse.parameter]))
    assert "# raised (ValueError) invalid literal" in sections["Code"]
    assert sections["Outputs"].startswith("(error) parse=(ValueError) invalid literal")
    assert "return int(text)  <--- (ValueError)" in sections["Outputs"]


def test_batch_feedback_is_labelled_per_output() -> None:
    weight = node(2.0, name="weight", trainable=True)
    for example, text in ((1.0, "first is low"), (2.0, "second is high")):
        with graph_context():
            multiply(weight, node(example, name="x")).backward(text)
    sections = sections_of(OptoPrime([weight]))
    assert sections["Feedback"].splitlines() == [
        "[on multiply] first is low",
        "[on multiply_2] second is high",
    ]


@bundle
def extend(total: float, item: object) -> float:
    """Add the length of the item's text."""
    return total + len(str(item))


def test_prompt_stays_within_budget_on_a_4000_node_graph() -> None:
    start = node(0.5, name="start", trainable=True, constraint="between 0 and 1")
    current: Node = start
    for index in range(2000):  # 2 nodes per call: the input and the operation
        current = extend(current, node("x" * 5000 if index == 1000 else 1, name="step"))
    current.backward("Far too big: " + "the sum overflowed. " * 500)
    optimizer = OptoPrime([start], prompt_budget=6_000)
    _, user = optimizer.construct_prompt()
    assert len(user.content) <= 6_000
    sections = split_sections(user.content, SECTION_TITLES)
    code = sections["Code"].splitlines()
    assert code[0] == "extend = extend(total=start, item=step)"
    assert code[-1] == "extend_1999 = extend(total=extend_1998, item=step_1999)"
    assert any("entries omitted" in line for line in code)
    assert "(float) start=0.5" in sections["Variables"]
    assert "between 0 and 1" in sections["Constraints"]
    assert sections["Feedback"].startswith("Far too big") and "chars omitted" in sections["Feedback"]
    assert len(sections["Feedback"]) < 2_000
    assert all(len(line) < 400 for line in sections["Inputs"].splitlines())


def test_prompt_without_feedback_is_an_error() -> None:
    weight = node(1.0, name="weight", trainable=True)
    with pytest.raises(ValueError, match="no parameter has feedback"):
        OptoPrime([weight]).construct_prompt()


# -- steps through the scripted server ----------------------------------------------------------------

MESSY_REPLIES = {
    "prose and a fence": 'Sure!\n```json\n{"reasoning": "raise it", "suggestion": {"weight": 7}}\n```\nDone.',
    "trailing comma": '{"reasoning": "raise it", "suggestion": {"weight": 7,},}',
    "xml variable tags": (
        "<reasoning>raise it</reasoning>\n<variable><name>weight</name><value>7</value></variable>"
    ),
    "values at the top level": '{"reasoning": "raise it", "weight": "7"}',
    "name with a type prefix": '{"reasoning": "raise it", "suggestion": {"(int) weight": 7.0}}',
    "list of name/value pairs": '{"reasoning": "raise it", "suggestion": [{"name": "weight", "value": 7}]}',
}


@pytest.mark.parametrize("text", MESSY_REPLIES.values(), ids=MESSY_REPLIES.keys())
def test_messy_replies_are_understood(
    text: str, scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    weight = node(3, name="weight", trainable=True)
    add(weight, 1).backward("should be 8")
    scripted_llm.add(text)
    result = OptoPrime([weight], scripted_llm_client).step()
    assert result.ok, result.errors
    assert weight.value == 7 and type(weight.value) is int
    assert result.reasoning == "raise it" and result.raw_reply == text
    assert [(u.name, u.old_value, u.new_value) for u in result.updates] == [("weight", 3, 7)]
    assert result.usage.calls == 1 and result.prompt_chars > 0
    (request,) = scripted_llm.requests
    schema = request.response_format["json_schema"]["schema"]  # type: ignore[index]
    assert "weight" in json.dumps(schema)


def test_the_schema_sent_is_closed_so_a_constrained_model_cannot_invent_names(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    # A 1.5B model under an open schema wrote a second key holding a code fence and named a
    # parameter "objective"; a closed schema makes both impossible for a grammar-constrained server.
    weight = node(3, name="weight", trainable=True)
    offset = node(1, name="offset", trainable=True)
    add(weight, offset).backward("should be 8")
    scripted_llm.add('{"reasoning": "raise both", "suggestion": {"weight": 5, "offset": 3}}')
    assert OptoPrime([weight, offset], scripted_llm_client).step().ok
    single = node(3, name="single", trainable=True)
    add(single, 1).backward("should be 8")
    scripted_llm.add('{"reasoning": "raise it", "suggestion": {"single": 7}}')
    assert OptoPrime([single], scripted_llm_client).step().ok and single.value == 7
    both, one = (r.response_format["json_schema"]["schema"] for r in scripted_llm.requests)  # type: ignore[index]
    for schema in (both, one):
        assert schema["additionalProperties"] is False and schema["required"] == ["reasoning", "suggestion"]
        assert schema["$defs"]["Suggestion"]["additionalProperties"] is False
        assert schema["properties"]["reasoning"]["maxLength"] == REASONING_MAX_CHARS  # no endless loops
    assert "required" not in both["$defs"]["Suggestion"]  # several: each may be kept
    field = one["$defs"]["Suggestion"]["properties"]["single"]
    assert one["$defs"]["Suggestion"]["required"] == ["single"] and field["type"] == "integer"
    assert "anyOf" not in field and "omit" not in field["description"]


def test_code_in_triple_quotes_and_echoed_marks_are_repaired(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    @bundle(trainable=True)
    def halve(value: float) -> float:
        """Half of a value."""
        return value / 3

    halve(4.0).backward("should be 2.0")
    # Not JSON: a Python triple-quoted string, with the feedback's failure mark copied into the code.
    scripted_llm.add(
        '{"reasoning": "divide by 2", "suggestion": {"halve.code": """def halve(value: float) -> float:\n'
        '    return value / 2  <--- (ValueError) wrong divisor"""}}'
    )
    result = OptoPrime([halve.parameter], scripted_llm_client).step()
    assert result.ok, result.errors
    assert halve.parameter.value == "def halve(value: float) -> float:\n    return value / 2"
    assert halve(4.0).value == 2.0 and scripted_llm.request_count == 1


def test_tags_format_sends_no_schema_and_reads_garbled_tags(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    @bundle(trainable=True)
    def halve(value: float) -> float:
        """Half of a value."""
        return value / 3

    halve(4.0).backward("should be 2.0")
    # What a 1.5B model wrote: `(name) x` instead of <name>x</name>, and <value> never closed.
    scripted_llm.add(
        "<reasoning>divide by 2</reasoning>\n<variable>\n(name) halve.code\n<value>\n"
        "def halve(value: float) -> float:\n    return value / 2\n</variable>"
    )
    optimizer = OptoPrime([halve.parameter], scripted_llm_client, reply_format="tags")
    assert "<variable>" in optimizer.construct_prompt()[0].content
    result = optimizer.step()
    assert result.ok, result.errors
    assert result.reasoning == "divide by 2" and halve(4.0).value == 2.0
    (request,) = scripted_llm.requests
    assert request.response_format is None and "schema" not in request.last_user_text


def test_a_variable_block_naming_nothing_known_is_re_asked_with_the_names(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    weight = node(3, name="weight", trainable=True)
    add(weight, 1).backward("should be 8")
    garbled = "<reasoning>hm</reasoning><variable>(name) hour\n(value)\nNone</variable>"
    scripted_llm.add(garbled, garbled)
    result = OptoPrime([weight], scripted_llm_client, reply_format="tags").step()
    assert weight.value == 3 and "NAME one of ['weight']" in result.errors[0]
    assert "NAME one of ['weight']" in scripted_llm.requests[1].last_user_text


def test_tags_format_re_asks_in_its_own_terms(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    weight = node(3, name="weight", trainable=True)
    add(weight, 1).backward("should be 8")
    scripted_llm.add(
        "", "<reasoning>raise it</reasoning><variable><name>weight</name><value>7</value></variable>"
    )
    result = OptoPrime([weight], scripted_llm_client, reply_format="tags").step()
    assert result.ok and weight.value == 7
    assert "the format asked for" in scripted_llm.requests[1].last_user_text


def test_step_updates_parameters_of_each_type(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    @bundle(trainable=True)
    def shout(text: str) -> str:
        """Make text loud."""
        return text.upper()

    rate = node(0.1, name="rate", trainable=True)
    count = node(2, name="count", trainable=True)
    prompt = node("Be brief.", name="prompt", trainable=True)
    verbose = node(False, name="verbose", trainable=True)
    weights = node([1, 2], name="weights", trainable=True)
    limits = node((1, 2), name="limits", trainable=True)

    @bundle
    def combine(rate: float, count: int, prompt: str, verbose: bool, weights: list, limits: tuple) -> str:
        """Join everything."""
        return f"{rate} {count} {prompt} {verbose} {weights} {limits}"

    shout(combine(rate, count, prompt, verbose, weights, limits)).backward("change everything")
    new_code = "def shout(text: str) -> str:\n    return text.upper() + '!'"
    scripted_llm.add(
        reply(
            {
                "rate": "0.25",
                "count": 3.0,
                "prompt": 42,
                "verbose": "true",
                "weights": "[3, 4.5]",
                "limits": [5, 6],
                "shout.code": f"```python\n{new_code}\n```",
            }
        )
    )
    optimizer = OptoPrime(
        [rate, count, prompt, verbose, weights, limits, shout.parameter], scripted_llm_client
    )
    result = optimizer.step()
    assert result.ok, result.errors
    assert (rate.value, count.value, prompt.value, verbose.value) == (0.25, 3, "42", True)
    assert type(count.value) is int and type(rate.value) is float
    assert weights.value == [3, 4.5] and limits.value == (5, 6)
    assert shout.parameter.value == new_code  # the fence was removed
    assert sorted(result.changed) == sorted(
        ["rate", "count", "prompt", "verbose", "weights", "limits", "shout.code"]
    )
    assert shout("hi").value == "HI!"  # the new code runs on the next call


def test_module_parameters_are_keyed_by_attribute_path(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    class Inner(Module):
        def __init__(self) -> None:
            self.bias = node(1.0, trainable=True)

    class Outer(Module):
        def __init__(self) -> None:
            self.inner = Inner()
            self.gain = node(2.0, trainable=True)

    model = Outer()
    multiply(model.gain, model.inner.bias).backward("should be 6")
    scripted_llm.add(reply({"bias": 3.0}))
    optimizer = OptoPrime(model, scripted_llm_client)
    assert [key for key, _ in optimizer.named_parameters()] == ["inner.bias", "gain"]
    result = optimizer.step()
    assert result.changed == ["inner.bias"] and model.inner.bias.value == 3.0
    assert optimizer.state_dict() == {"inner.bias": 3.0, "gain": 2.0}


def test_unparseable_replies_change_nothing(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    weight = node(3, name="weight", trainable=True)
    add(weight, 1).backward("should be 8")
    scripted_llm.add("I think it should be bigger.", "Really, bigger.")
    result = OptoPrime([weight], scripted_llm_client).step()
    assert weight.value == 3 and not result.updates
    assert result.errors and "even after re-asking once" in result.errors[0]
    assert result.raw_reply == "Really, bigger."
    _, second = scripted_llm.requests
    assert second.messages[-2].text == "I think it should be bigger."
    assert "could not be used" in second.messages[-1].text


def test_a_wrongly_typed_value_is_re_asked_then_reported(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    weight = node(3, name="weight", trainable=True)
    add(weight, 1).backward("should be 8")
    scripted_llm.add(reply({"weight": "seven"}), reply({"weight": 7.5}))
    result = OptoPrime([weight], scripted_llm_client).step()
    assert weight.value == 3 and not result.updates
    assert "weight" in result.errors[0] and "integer" in result.errors[0]
    assert "weight" in scripted_llm.requests[1].messages[-1].text  # the re-ask names the field


def test_a_refused_request_is_an_error_not_a_crash(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    weight = node(3, name="weight", trainable=True)
    add(weight, 1).backward("should be 8")
    scripted_llm.add(ScriptedReply.error(400, "context length exceeded"))
    result = OptoPrime([weight], scripted_llm_client).step()
    assert weight.value == 3 and "context length exceeded" in result.errors[0]


def test_a_dead_endpoint_raises_and_changes_nothing(scripted_llm: ScriptedLLMServer) -> None:
    weight = node(3, name="weight", trainable=True)
    add(weight, 1).backward("should be 8")
    config = scripted_llm.llm_config(max_retries=1, retry_deadline=0.5)
    scripted_llm.stop()
    with LLMClient(config, cache=False) as client, pytest.raises(LLMUnavailableError):
        OptoPrime([weight], client).step()
    assert weight.value == 3


def test_bad_values_are_reported_and_good_ones_applied(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    weight = node(3, name="weight", trainable=True)
    weights = node([1, 2], name="weights", trainable=True)
    add(weight, multiply(weights, 1)).backward("change")
    scripted_llm.add(reply({"weight": 4, "weights": "not a list", "bogus": 1}))
    result = OptoPrime([weight, weights], scripted_llm_client).step()
    assert result.changed == ["weight"] and weight.value == 4 and weights.value == [1, 2]
    assert any("weights" in error and "kept [1, 2]" in error for error in result.errors)
    assert any("'bogus'" in error for error in result.errors)


def test_new_code_that_does_not_compile_is_reported_and_becomes_feedback(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    @bundle(trainable=True)
    def halve(value: float) -> float:
        """Half of a value."""
        return value / 3

    halve(4.0).backward("should be 2.0")
    scripted_llm.add(reply({"halve.code": "def halve(value: float) -> float:\n    return value / 2 +"}))
    optimizer = OptoPrime([halve.parameter], scripted_llm_client)
    result = optimizer.step()
    assert result.changed == ["halve.code"] and "SyntaxError" in (result.updates[0].note or "")
    assert any("does not compile" in error for error in result.errors)
    failed = halve(4.0)  # the core compiles the new source on the next call and reports the failure
    assert isinstance(failed, ExceptionNode) and failed.error_type == "SyntaxError"
    optimizer.zero_feedback()
    failed.backward()
    assert "<--- (SyntaxError)" in sections_of(optimizer)["Feedback"]


def test_step_without_feedback_is_skipped(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    weight = node(3, name="weight", trainable=True)
    result = OptoPrime([weight], scripted_llm_client).step()
    assert result.skipped and scripted_llm.request_count == 0


def test_fixing_code_from_its_exception(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    @bundle(trainable=True)
    def mean(values: list[float]) -> float:
        """The arithmetic mean."""
        return sum(values) / len(values[0])

    failed = mean([1.0, 2.0, 6.0])
    assert isinstance(failed, ExceptionNode)
    optimizer = OptoPrime([mean.parameter], scripted_llm_client)
    optimizer.backward(failed)  # no text: the exception explains itself
    feedback = sections_of(optimizer)["Feedback"]
    assert (
        "return sum(values) / len(values[0])  <--- (TypeError) object of type 'float' has no len()"
        in feedback
    )
    fixed = mean.parameter.value.replace("len(values[0])", "len(values)")
    scripted_llm.add(reply({"mean.code": fixed}, "divide by the number of values"))
    assert optimizer.step().changed == ["mean.code"]
    assert mean([1.0, 2.0, 6.0]).value == 3.0


def test_memory_shows_past_attempts(scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient) -> None:
    weight = node(1.0, name="weight", trainable=True)
    optimizer = OptoPrime([weight], scripted_llm_client, memory_size=2)
    for value in (2.0, 3.0, 4.0):
        optimizer.zero_feedback()
        multiply(weight, 2.0).backward(f"{weight.value * 2} is too small")
        scripted_llm.add(reply({"weight": value}))
        optimizer.step()
    prompts = [split_sections(r.last_user_text, SECTION_TITLES) for r in scripted_llm.requests]
    assert "Past attempts" not in prompts[0]
    assert prompts[1]["Past attempts"].splitlines()[1:] == [
        "[attempt 1] weight=1.0",
        "  feedback: 2.0 is too small",
    ]
    third = prompts[2]["Past attempts"]
    assert "[attempt 1] weight=1.0" in third and "[attempt 2] weight=2.0" in third
    assert "weight=3.0" not in third and prompts[2]["Feedback"] == "6.0 is too small"
    optimizer.zero_feedback()
    multiply(weight, 2.0).backward("8.0 is right")
    shown = split_sections(optimizer.construct_prompt()[1].content, SECTION_TITLES)["Past attempts"]
    assert (
        "[attempt 1]" not in shown and "[attempt 2] weight=2.0" in shown and "[attempt 3] weight=3.0" in shown
    )


# -- OPRO --------------------------------------------------------------------------------------------

OPRO_TITLES = ("Instruction", "Variables", "History", "Feedback")


def test_opro_keeps_history_sorted_by_score(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    weight = node(1.0, name="weight", trainable=True, description="the gain")
    optimizer = OPRO([weight], scripted_llm_client, history_size=3)
    for score, next_value in ((0.5, 2.0), (0.9, 3.0), (0.2, 4.0), (0.7, 5.0)):
        optimizer.zero_feedback()
        multiply(weight, 2.0).backward(f"output {weight.value * 2}")
        optimizer.observe_score(score)
        scripted_llm.add(reply({"weight": next_value}))
        assert optimizer.step().changed == ["weight"]
    assert [(e.values["weight"], e.score) for e in optimizer.history] == [(1.0, 0.5), (4.0, 0.7), (2.0, 0.9)]
    last_prompt = split_sections(scripted_llm.requests[-1].last_user_text, OPRO_TITLES)
    history_lines = [line for line in last_prompt["History"].splitlines() if line.startswith("weight=")]
    assert history_lines == ["weight=1.0", "weight=4.0", "weight=2.0"]  # worst first, best last
    assert "score: 0.9" in last_prompt["History"].splitlines()[-1]
    assert last_prompt["Feedback"] == "output 8.0"
    assert "(float) weight the gain" in last_prompt["Variables"]


def test_opro_reads_scores_from_feedback_and_can_minimize(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    assert score_in_feedback(["Score: 3", "score = 5.0; fine"]) == 4.0
    assert score_in_feedback(["no number here"]) is None
    weight = node(1.0, name="weight", trainable=True)
    optimizer = OPRO([weight], scripted_llm_client, maximize=False)
    for cost, next_value in ((9.0, 2.0), (1.0, 3.0), (4.0, 2.5)):
        optimizer.zero_feedback()
        add(weight, 0.0).backward(f"score: {cost}")
        scripted_llm.add(reply({"weight": next_value}))
        optimizer.step()
    assert [entry.score for entry in optimizer.history] == [9.0, 4.0, 1.0]
    assert "lower is better" in scripted_llm.requests[-1].last_user_text
