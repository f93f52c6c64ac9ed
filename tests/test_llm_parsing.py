"""Lenient reply parsing: pure text in, data or a precise ReplyParseError out."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from trace_graph.llm import ReplyParseError, extract_json, extract_tags, parse_reply


class Plan(BaseModel):
    reasoning: str
    answer: int


class Variable(BaseModel):
    name: str
    value: str


class Update(BaseModel):
    reasoning: str
    variable: list[Variable]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2, 3]  ", [1, 2, 3]),
        ('Sure!\n```json\n{"a": 1, "b": [1, 2,],}\n```\nHope this helps.', {"a": 1, "b": [1, 2]}),
        ('```\n{"a": "fenced without a language"}\n```', {"a": "fenced without a language"}),
        ('The result is {"a": {"b": [1, {"c": null}]}} as requested.', {"a": {"b": [1, {"c": None}]}}),
        ("Python style: {'a': True, 'b': None, 'c': (1, 2)}", {"a": True, "b": None, "c": [1, 2]}),
        ('{"a": True, "b": None, "c": false}', {"a": True, "b": None, "c": False}),
        ('{"text": "line one\nline two\ttabbed"}', {"text": "line one\nline two\ttabbed"}),
        (
            '{"a": "a quote \\" and a brace } inside", "b": 2,}',
            {"a": 'a quote " and a brace } inside', "b": 2},
        ),
        ('Use {placeholders} like this. {"a": 1}', {"a": 1}),
        ('<think>maybe {"a": 0}?</think>\n{"a": 2}', {"a": 2}),
        ('{"text": "it\'s <b>bold</b>"}', {"text": "it's <b>bold</b>"}),
    ],
)
def test_extract_json_tolerates_messy_replies(text: str, expected: object) -> None:
    assert extract_json(text) == expected


def test_xml_tags_become_a_dict_with_repeated_tags_as_a_list() -> None:
    text = """I will update both.
<reasoning>x is too small</reasoning>
<variable><name>x</name><value>
    def f():
        return 1
</value></variable>
<variable><name>y</name><value>2</value></variable>"""
    assert extract_json(text) == {
        "reasoning": "x is too small",
        "variable": [{"name": "x", "value": "def f():\n    return 1"}, {"name": "y", "value": "2"}],
    }


def test_tags_that_come_before_json_win_and_json_inside_a_tag_is_decoded() -> None:
    assert extract_json('<reasoning>try {x}</reasoning><answer>{"x": 1}</answer>') == {
        "reasoning": "try {x}",
        "answer": {"x": 1},
    }


def test_extract_tags_returns_every_complete_occurrence() -> None:
    text = "<answer kind='final'> 42 </answer> and <answer>43</answer> and <answer>cut"
    assert extract_tags(text, "answer") == ["42", "43"]
    assert extract_tags(text, "missing") == []


def test_truncated_json_is_reported_not_completed() -> None:
    with pytest.raises(ReplyParseError) as caught:
        extract_json('Here: {"plan": {"x": 1}, "notes": "the first resource is')
    problem = caught.value.problem
    assert "cut off" in problem
    assert "'\"' '}'" in problem  # names what is missing, innermost first


def test_invalid_json_error_points_at_the_problem() -> None:
    with pytest.raises(ReplyParseError, match=r"Expecting ',' delimiter at line 1 column 9"):
        extract_json('{"a": 1 "b": 2}')


@pytest.mark.parametrize("text", ["", "   ", "no structure at all"])
def test_replies_without_json_raise(text: str) -> None:
    with pytest.raises(ReplyParseError, match=r"empty|no JSON object"):
        extract_json(text)


def test_python_literals_are_never_evaluated() -> None:
    with pytest.raises(ReplyParseError):
        extract_json("{'a': __import__('os').getcwd()}")


def test_parse_reply_validates_with_lax_conversion_from_tags() -> None:
    plan = parse_reply("Sure. <reasoning>3 + 4</reasoning>\n<answer>7</answer>", Plan)
    assert plan == Plan(reasoning="3 + 4", answer=7)


def test_parse_reply_reads_the_optoprime_variable_shape() -> None:
    one = "<reasoning>r</reasoning><variable><name>x</name><value>5</value></variable>"
    # a single <variable> tag is one dict; the list-typed field gets it as a list of one
    assert parse_reply(one, Update) == Update(reasoning="r", variable=[Variable(name="x", value="5")])
    two = one + "<variable><name>y</name><value>6</value></variable>"
    assert parse_reply(two, Update).variable == [Variable(name="x", value="5"), Variable(name="y", value="6")]


def test_parse_reply_unwraps_a_single_wrapper_object_and_wraps_a_bare_value() -> None:
    assert parse_reply('{"result": {"reasoning": "r", "answer": 1}}', Plan) == Plan(reasoning="r", answer=1)

    class Number(BaseModel):
        value: float

    assert parse_reply("2.5", Number) == Number(value=2.5)
    with pytest.raises(ReplyParseError, match="no JSON object"):
        parse_reply("The answer is 2.5", Number)


def test_parse_reply_error_names_fields_and_inputs() -> None:
    with pytest.raises(ReplyParseError) as caught:
        parse_reply('{"answer": "seven"}', Plan)
    problem = caught.value.problem
    assert "`answer`: Input should be a valid integer" in problem
    assert "'seven'" in problem
    assert "`reasoning`: Field required" in problem
    assert "reasoning (str, required), answer (int, required)" in problem
    assert caught.value.text == '{"answer": "seven"}'
