"""Lenient extraction of structured data from messy model output.

Small local models wrap JSON in prose or code fences, leave trailing commas, write Python literals,
emit raw control characters inside strings, get cut off at max_tokens, or answer with XML-ish tags.
Everything here is pure text processing (no eval: `ast.literal_eval` only ever sees one extracted
literal), and every failure raises `ReplyParseError` with a message precise enough to send back to
the model so it can correct itself.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)(?:\r?\n)?[ \t]*```", re.DOTALL)
_TAG = re.compile(r"<([A-Za-z_][\w.-]*)(?:\s[^<>]*)?>(.*?)</\1\s*>", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_BARE_WORDS = {
    "json": {"True": "true", "False": "false", "None": "null"},
    "python": {"true": "True", "false": "False", "null": "None"},
}
_CLOSERS = {"{": "}", "[": "]"}
_SHOWN_CHARS = 120


class ReplyParseError(ValueError):
    """A reply that could not be turned into the expected data; `problem` is phrased for the model."""

    def __init__(self, problem: str, text: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.text = text


@dataclass(frozen=True)
class _Candidate:
    start: int
    text: str
    closed: bool
    missing: str  # the closing characters a truncated candidate lacks, innermost first


def extract_json(text: str) -> Any:
    """The JSON value in `text`, tolerating fences, prose, trailing commas and Python literals.

    Order: the whole text; fenced blocks (```json first); then whichever comes first in the text,
    an embedded JSON object/array or XML-ish tags (`<answer>..</answer>` -> {"answer": ...}).
    A value cut off before its end is reported, never completed by guessing.
    """
    # reasoning models put a <think> block before the answer; it is never the answer itself
    stripped = _THINK.sub("", text).strip()
    if not stripped:
        raise ReplyParseError("The reply is empty; expected a JSON object.", text)
    parsed = _parse_literal(stripped)
    if parsed is not _FAILED:
        return parsed
    for block in _fenced_blocks(stripped):
        parsed = _parse_literal(block)
        if parsed is not _FAILED:
            return parsed

    tags = _TAG.search(stripped)
    found = _first_embedded_value(stripped)
    if tags is not None and (found is None or tags.start() < found[0].start):
        return _tags_to_value(stripped, top_level=True)
    if found is None:
        raise ReplyParseError(
            'The reply contains no JSON object. Reply with one JSON object, e.g. {"field": ...}, '
            f"and nothing else. The reply began: {_shorten(stripped)!r}",
            text,
        )
    candidate, value = found
    if value is not _FAILED:
        return value
    if not candidate.closed:
        raise ReplyParseError(
            f"The reply is cut off: the JSON value starting at character {candidate.start} never ends "
            f"(it still needs {' '.join(repr(c) for c in candidate.missing)} to close). The reply "
            f"ended with: {_shorten(candidate.text, tail=True)!r}. Reply with a complete, shorter JSON "
            "object.",
            text,
        )
    raise ReplyParseError(
        f"The JSON in the reply is invalid: {_json_error(candidate.text)}. The JSON was: "
        f"{_shorten(candidate.text)!r}",
        text,
    )


def extract_tags(text: str, tag: str) -> list[str]:
    """Contents of every complete `<tag>...</tag>` in `text` (attributes allowed, outermost first)."""
    pattern = re.compile(rf"<{re.escape(tag)}(?:\s[^<>]*)?>(.*?)</{re.escape(tag)}\s*>", re.DOTALL)
    return [_clean_tag_text(match.group(1)) for match in pattern.finditer(text)]


def parse_reply(text: str, model: type[T]) -> T:
    """`text` as an instance of `model`; `ReplyParseError` says precisely what was wrong."""
    value = extract_json(text)
    attempts = [value, *_alternative_shapes(value, model, text)]
    first_error: ValidationError | None = None
    for attempt in attempts:
        try:
            return model.model_validate(attempt)
        except ValidationError as error:
            first_error = first_error or error
    assert first_error is not None
    raise ReplyParseError(
        f"The reply's JSON does not match the expected {model.__name__} object: "
        f"{describe_validation_error(first_error)}. Expected fields: {_field_summary(model)}.",
        text,
    )


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, with the field path and the offending input, for the model to read."""
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "the top level"
        problem = f"`{where}`: {item['msg']}"
        if item["type"] != "missing":
            problem += f" (got {_shorten(repr(item.get('input')), limit=60)})"
        problems.append(problem)
    return "; ".join(problems)


class _Failed:
    pass


_FAILED: Any = _Failed()


def _parse_literal(candidate: str) -> Any:
    """`candidate` as JSON, or as a Python literal, after safe repairs; `_FAILED` otherwise."""
    # strict=False: the llama.cpp server emits raw control characters inside strings.
    for attempt in (candidate, _without_trailing_commas(_replace_bare_words(candidate, "json"))):
        try:
            return json.loads(attempt, strict=False)
        except ValueError:
            pass
    if candidate[0] in "{[":
        try:
            value = ast.literal_eval(_replace_bare_words(candidate, "python"))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return _FAILED
        return _as_json_value(value)
    return _FAILED


def _as_json_value(value: Any) -> Any:
    """Python literal -> JSON-compatible value (tuples become lists); `_FAILED` for sets, bytes..."""
    if isinstance(value, dict):
        items = {}
        for key, item in value.items():
            converted = _as_json_value(item)
            if not isinstance(key, str | int | float | bool) or converted is _FAILED:
                return _FAILED
            items[key if isinstance(key, str) else json.dumps(key)] = converted
        return items
    if isinstance(value, list | tuple):
        converted_items = [_as_json_value(item) for item in value]
        return _FAILED if any(item is _FAILED for item in converted_items) else converted_items
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _FAILED


def _fenced_blocks(text: str) -> list[str]:
    blocks = [(language.lower(), body.strip()) for language, body in _FENCE.findall(text)]
    return [body for language, body in blocks if language == "json"] + [
        body for language, body in blocks if language != "json"
    ]


def _first_embedded_value(text: str) -> tuple[_Candidate, Any] | None:
    """The first bracketed candidate that parses; or the first truncated/invalid one if none does.

    A candidate that is closed but invalid is skipped whole (never mined for inner objects, which
    would silently return a fragment); a truncated one stops the search for the same reason.
    """
    first_bad: _Candidate | None = None
    position = 0
    while True:
        start = _next_opening(text, position)
        if start < 0:
            break
        candidate = _scan_candidate(text, start)
        if not candidate.closed:
            return candidate, _FAILED
        value = _parse_literal(candidate.text)
        if value is not _FAILED:
            return candidate, value
        first_bad = first_bad or candidate
        position = start + len(candidate.text)
    return (first_bad, _FAILED) if first_bad else None


def _next_opening(text: str, position: int) -> int:
    openings = [index for index in (text.find("{", position), text.find("[", position)) if index >= 0]
    return min(openings, default=-1)


def _scan_candidate(text: str, start: int) -> _Candidate:
    """Bracket-match from `start`, skipping strings; single quotes only open strings where a key or
    value may begin, so an apostrophe in unquoted prose does not swallow the rest of the reply."""
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    previous_significant = ""
    for index in range(start, len(text)):
        char = text[index]
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
                previous_significant = char
            continue
        if char == '"' or (char == "'" and previous_significant in ("{", "[", ",", ":")):
            quote = char
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif char in "}]":
            if not stack or stack[-1] != char:
                return _Candidate(start, text[start : index + 1], closed=True, missing="")
            stack.pop()
            if not stack:
                return _Candidate(start, text[start : index + 1], closed=True, missing="")
        if not char.isspace():
            previous_significant = char
    missing = (quote or "") + "".join(reversed(stack))
    return _Candidate(start, text[start:], closed=False, missing=missing)


def _replace_bare_words(text: str, target: str) -> str:
    """Swap true/false/null and True/False/None outside strings (the other dialect's spelling)."""
    replacements = _BARE_WORDS[target]
    pieces: list[str] = []
    quote: str | None = None
    escaped = False
    index = 0
    while index < len(text):
        char = text[index]
        if quote is not None:
            quote, escaped = _string_step(char, quote, escaped)
            pieces.append(char)
            index += 1
            continue
        if char in "\"'":
            quote = char
        elif char.isalpha() and (index == 0 or not (text[index - 1].isalnum() or text[index - 1] == "_")):
            match = re.match(r"[A-Za-z_]\w*", text[index:])
            assert match is not None
            word = match.group(0)
            pieces.append(replacements.get(word, word))
            index += len(word)
            continue
        pieces.append(char)
        index += 1
    return "".join(pieces)


def _string_step(char: str, quote: str, escaped: bool) -> tuple[str | None, bool]:
    """One character inside a string: the quote still open (None once closed) and escape state."""
    if escaped:
        return quote, False
    if char == "\\":
        return quote, True
    return (None if char == quote else quote), False


def _without_trailing_commas(text: str) -> str:
    pieces: list[str] = []
    quote: str | None = None
    escaped = False
    for index, char in enumerate(text):
        if quote is not None:
            quote, escaped = _string_step(char, quote, escaped)
        elif char == '"':
            quote = char
        elif char == "," and re.match(r"\s*[}\]]", text[index + 1 :]):
            continue
        pieces.append(char)
    return "".join(pieces)


def _tags_to_value(text: str, *, top_level: bool) -> Any:
    """XML-ish tags -> dict (repeated tags -> list). Nested content becomes a dict only when it is
    made of tags alone; otherwise it stays text, so HTML-ish markup in prose is not mangled. At the
    top level, prose around the tags ("Sure! <answer>..</answer>") is ignored."""
    matches = list(_TAG.finditer(text))
    if not matches:
        return _FAILED
    if not top_level and _TAG.sub("", text).strip():
        return _FAILED
    collected: dict[str, list[Any]] = {}
    for match in matches:
        name, body = match.group(1), match.group(2)
        nested = _tags_to_value(body, top_level=False)
        collected.setdefault(name, []).append(nested if nested is not _FAILED else _tag_text_value(body))
    # a tag that appears once is a value; repeated tags (several <variable>s) become a list
    return {name: values[0] if len(values) == 1 else values for name, values in collected.items()}


def _tag_text_value(body: str) -> Any:
    """Tag text; a body that is itself a JSON object/array is decoded (`<answer>{"x": 1}</answer>`)."""
    cleaned = _clean_tag_text(body)
    if cleaned[:1] in ("{", "["):
        value = _parse_literal(cleaned)
        if value is not _FAILED:
            return value
    return cleaned


def _clean_tag_text(body: str) -> str:
    # dedent rather than strip so code inside a tag keeps its relative indentation
    return textwrap.dedent(body).strip("\r\n").rstrip()


def _alternative_shapes(value: Any, model: type[BaseModel], text: str) -> list[Any]:
    """Other readings of the same reply that small models commonly produce."""
    shapes: list[Any] = []
    if isinstance(value, dict) and len(value) == 1:
        # {"answer": {...the object...}} or <answer>{...}</answer>
        (inner,) = value.values()
        if isinstance(inner, dict):
            shapes.append(inner)
    fields = list(model.model_fields)
    if len(fields) == 1 and not (isinstance(value, dict) and fields[0] in value):
        shapes.append({fields[0]: value})  # a bare value for a one-field model
    if isinstance(value, dict) and _TAG.search(text):
        shapes.append(_tags_as_text(text))  # tag bodies that looked like JSON but are meant as text
    if isinstance(value, dict):
        # one <variable> tag (or one object) where the model expects a list of them
        listed = {
            name: [item] if name in model.model_fields and _is_list_field(model, name) else item
            for name, item in value.items()
        }
        if any(not isinstance(item, list) and isinstance(listed[name], list) for name, item in value.items()):
            shapes.append(listed)
    return shapes


def _is_list_field(model: type[BaseModel], name: str) -> bool:
    annotation = model.model_fields[name].annotation
    return annotation is list or typing.get_origin(annotation) is list


def _tags_as_text(text: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for match in _TAG.finditer(text):
        result.setdefault(match.group(1), _clean_tag_text(match.group(2)))
    return result


def _field_summary(model: type[BaseModel]) -> str:
    parts = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        shown = (
            annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
        )
        parts.append(f"{name} ({shown}{', required' if field.is_required() else ''})")
    return ", ".join(parts) or "none"


def _json_error(candidate: str) -> str:
    try:
        json.loads(_without_trailing_commas(candidate), strict=False)
    except json.JSONDecodeError as error:
        context = candidate[max(0, error.pos - 20) : error.pos + 20]
        return f"{error.msg} at line {error.lineno} column {error.colno} (near {context!r})"
    return "not valid JSON"


def _shorten(text: str, *, limit: int = _SHOWN_CHARS, tail: bool = False) -> str:
    if len(text) <= limit:
        return text
    return "..." + text[-limit:] if tail else text[:limit] + "..."
