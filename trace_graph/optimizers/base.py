"""What every LLM optimizer shares: its parameters, feedback bookkeeping, asking the LLM for new
values, and applying them safely.

A subclass only writes the prompt (``_messages``). ``step()`` then asks the LLM for a
``{"reasoning": ..., "suggestion": {name: value}}`` reply whose JSON schema names each parameter with
its type, so servers that constrain decoding to a schema produce usable answers even from small
models; other servers get the schema in the prompt and the lenient parser (JSON in prose, fences,
XML-ish ``<variable><name>..</name><value>..</value></variable>`` tags). A reply that still cannot
be used is sent back once with the precise error. Whatever goes wrong with a reply, ``step()`` does
not raise: it returns a ``StepResult`` naming the error and leaves the parameters as they were.
A dead endpoint does raise (``LLMUnavailableError``): that is not a bad reply, and a training loop
should stop rather than record a hundred empty steps.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

from trace_graph.llm import (
    ChatMessage,
    LLMClient,
    LLMReplyError,
    LLMRequestError,
    ReplyParseError,
    parse_reply,
)
from trace_graph.llm.usage import Usage
from trace_graph.module import Module
from trace_graph.nodes import ExceptionNode, Node, ParameterNode
from trace_graph.propagation import Feedback, Subgraph
from trace_graph.report import short_repr


class ParameterUpdate(BaseModel):
    """One parameter the step changed."""

    name: str  # the parameter's key (attribute path in a Module, else its node name)
    old_value: Any
    new_value: Any
    note: str | None = None  # e.g. that new code does not compile (it is still applied, see _coerce)


class StepResult(BaseModel):
    """What one ``step()`` did. ``errors`` lists what could not be used; the rest was applied."""

    updates: list[ParameterUpdate] = Field(default_factory=list)
    reasoning: str = ""
    raw_reply: str | None = None  # the model's last reply text, as received
    errors: list[str] = Field(default_factory=list)
    skipped: str | None = None  # why no LLM call was made (e.g. no feedback yet)
    prompt_chars: int = 0
    usage: Usage = Field(default_factory=Usage)

    @property
    def changed(self) -> list[str]:
        return [update.name for update in self.updates]

    @property
    def ok(self) -> bool:
        return not self.errors


# -- the reply ---------------------------------------------------------------------------------------

ReplyFormat = Literal["json", "tags"]

# How to answer, for the end of a system prompt. JSON is the default: servers that constrain
# decoding to the schema make it reliable. Tags suit models that must write code without such a
# server: code inside a tag needs no escaping, which small models get wrong in JSON strings.
OUTPUT_FORMATS: dict[str, str] = {
    "json": """\
Reply with one JSON object and nothing else:
{"reasoning": "<your analysis, briefly>", "suggestion": {"<variable name>": <new value>}}
Give numbers as numbers; list only the variables you change.""",
    "tags": """\
Reply in this format and nothing else:
<reasoning>your analysis, briefly</reasoning>
<variable>
<name>the variable's name</name>
<value>
its complete new value
</value>
</variable>
Write one <variable> block per variable you change, none when nothing should change.""",
}

_FENCED = re.compile(r"^\s*```[\w+-]*[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\s*$", re.DOTALL)


# The failure marks of an annotated source (`x = y[0]  <--- (TypeError) ...`), echoed back by models.
_ECHOED_MARK = re.compile(r"[ \t]*#?[ \t]*<--- \(\w+\).*$", re.MULTILINE)


def _clean_code(value: Any) -> Any:
    # Models often wrap code in a ```python fence, and copy the error marks shown in the feedback.
    if isinstance(value, str):
        match = _FENCED.match(value)
        if match:
            value = match.group(1)
        value = _ECHOED_MARK.sub("", value)
    return value


def _as_text(value: Any) -> Any:
    # A prompt parameter answered with a number or an object is still meant as text.
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


Code = Annotated[str, BeforeValidator(_clean_code)]
Text = Annotated[str, BeforeValidator(_as_text)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _annotation(parameter: ParameterNode) -> Any:
    """The type a suggestion for ``parameter`` must have (``Any`` when checked by ``_coerce``)."""
    value = parameter._value
    if parameter.is_code:
        return Code
    if isinstance(value, bool):  # before int: bool is an int subclass
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return FiniteFloat
    if isinstance(value, str):
        return Text
    return Any


_PAIR_KEYS = ("variable", "variables", "suggestions", "updates", "new_values")
_REASONING_KEYS = ("reasoning", "reason", "thinking", "thoughts", "explanation", "analysis")
_TYPE_PREFIX = re.compile(r"^\((?:[\w.]+)\)\s*")


class ReplyBase(BaseModel):
    """``{"reasoning": ..., "suggestion": {...}}``; other shapes small models write are mapped to it."""

    parameter_names: ClassVar[tuple[str, ...]] = ()
    reasoning: str = ""

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = cls.parameter_names
        reasoning = next((data[key] for key in _REASONING_KEYS if key in data), "")
        if "suggestion" in data:
            raw = data["suggestion"]
        else:
            raw = next((data[key] for key in _PAIR_KEYS if key in data), None)
            if raw is None:  # the values at the top level: {"reasoning": ..., "x": 3}
                raw = {key: value for key, value in data.items() if _match_name(key, names) is not None}
        if isinstance(raw, str) and not raw.strip():  # "suggestion": "" means no change
            raw = None
        suggestion = _as_mapping(raw, names)
        if isinstance(suggestion, str):  # a <variable> block naming nothing known: say what is expected
            raise ValueError(
                f"a <variable> block needs <name>NAME</name> with NAME one of {list(names)}, then "
                f"<value>the new value</value>; got {short_repr(suggestion, 80)!r}"
            )
        if isinstance(suggestion, dict):
            suggestion = {_match_name(key, names) or key: value for key, value in suggestion.items()}
        if not isinstance(reasoning, str):
            reasoning = json.dumps(reasoning, ensure_ascii=False)
        return {"reasoning": reasoning, "suggestion": {} if suggestion is None else suggestion}


def _as_mapping(raw: Any, names: tuple[str, ...]) -> Any:
    """{name: value} from a dict, a {"name", "value"} pair, a list of pairs, or the text of a
    ``<variable>`` block with broken tags; else unchanged."""
    if isinstance(raw, dict) and "name" in raw and "value" in raw and len(raw) <= 3:
        return {str(raw["name"]).strip(): raw["value"]}
    if isinstance(raw, str):
        return _loose_pair(raw, names) or raw
    if isinstance(raw, list) and all(isinstance(item, dict | str) for item in raw):
        merged: dict[str, Any] = {}
        for item in raw:
            mapped = _as_mapping(item, names)
            if not isinstance(mapped, dict):
                return raw
            merged.update(mapped)
        return merged
    return raw


_LOOSE_VALUE = re.compile(r"<value>[ \t]*\r?\n?(.*?)(?:</value>|</variable>|\Z)", re.DOTALL)


def _loose_pair(text: str, names: tuple[str, ...]) -> dict[str, str] | None:
    """A ``<variable>`` body as small models garble it: ``(name) x`` or ``name: x`` instead of
    ``<name>x</name>``, an unclosed ``<value>``. The name must be a known parameter's."""
    value = _LOOSE_VALUE.search(text)
    if value is None:
        return None
    mentioned = [name for name in names if name in text[: value.start()]]
    if not mentioned:
        return None
    return {max(mentioned, key=len): textwrap.dedent(value.group(1)).strip("\r\n").rstrip()}


def _match_name(key: Any, names: tuple[str, ...]) -> str | None:
    """The parameter ``key`` means: exact, or after stripping quotes/backticks and a ``(type)`` prefix,
    or case-insensitively when that is unambiguous."""
    if not isinstance(key, str):
        return None
    if key in names:
        return key
    cleaned = _TYPE_PREFIX.sub("", key.strip().strip("`'\"").strip())
    if cleaned in names:
        return cleaned
    folded = [name for name in names if name.lower() == cleaned.lower()]
    return folded[0] if len(folded) == 1 else None


def reply_model(parameters: dict[str, ParameterNode]) -> type[ReplyBase]:
    """A reply model whose ``suggestion`` has one optional, typed field per parameter label."""
    fields: dict[str, Any] = {}
    for index, (label, parameter) in enumerate(parameters.items()):
        kind = "the full new source code" if parameter.is_code else f"a {type(parameter._value).__name__}"
        fields[f"v{index}"] = (
            Optional[_annotation(parameter)],  # noqa: UP045 - the X | None form fails on Annotated/Any
            Field(default=None, alias=label, description=f"new value of {label}: {kind}; omit to keep it"),
        )
    suggestion = create_model(  # type: ignore[call-overload]
        "Suggestion", __config__=ConfigDict(extra="allow"), **fields
    )
    model = create_model(
        "OptimizerReply",
        __base__=ReplyBase,
        suggestion=(suggestion, Field(default_factory=suggestion, description="new values by name")),
    )
    model.parameter_names = tuple(parameters)
    return model


# Bound on the reasoning a grammar-constrained server lets the model write. The 1.5B model once
# repeated one sentence until its 1,536-token limit, so the step failed with nothing suggested.
REASONING_MAX_CHARS = 1200


def reply_schema(model: type[ReplyBase]) -> dict[str, Any]:
    """The JSON schema sent to the server: closed objects, so a grammar-constrained small model can
    neither invent a parameter name nor smuggle text into an extra key; with one parameter its new
    value is required (a step that must rewrite it cannot answer "keep"); the reasoning is bounded."""
    schema = model.model_json_schema()
    schema["additionalProperties"] = False
    schema["properties"]["reasoning"]["maxLength"] = REASONING_MAX_CHARS
    schema["required"] = ["reasoning", "suggestion"]
    suggestion = schema["$defs"]["Suggestion"]
    suggestion["additionalProperties"] = False
    if len(model.parameter_names) == 1:
        (name,) = model.parameter_names
        field = suggestion["properties"][name]
        options = [option for option in field.pop("anyOf", []) if option.get("type") != "null"]
        if len(options) == 1:
            field.update(options[0])
        field.pop("default", None)
        field["description"] = field["description"].replace("; omit to keep it", "")
        suggestion["required"] = [name]
    return schema


def suggested_values(reply: ReplyBase) -> dict[str, Any]:
    """The suggestion as {label: value}: the named fields given (null means keep) and unknown names."""
    suggestion: BaseModel = reply.suggestion  # type: ignore[attr-defined]
    values = {
        field.alias or name: getattr(suggestion, name)
        for name, field in type(suggestion).model_fields.items()
        if name in suggestion.model_fields_set and getattr(suggestion, name) is not None
    }
    values.update(suggestion.model_extra or {})
    return values


_TRIPLE_QUOTED = re.compile(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', re.DOTALL)


def _read_reply(text: str, model: type[ReplyBase]) -> tuple[ReplyBase | None, str]:
    """The reply as ``model``, or None and the problem (phrased for the model to read)."""
    try:
        return parse_reply(text, model), ""
    except ReplyParseError as error:
        problem = error.problem
    # Small models put code in JSON as Python triple-quoted strings; read them as JSON strings.
    if _TRIPLE_QUOTED.search(text):
        repaired = _TRIPLE_QUOTED.sub(lambda match: json.dumps(match.group(1) or match.group(2) or ""), text)
        try:
            return parse_reply(repaired, model), ""
        except ReplyParseError:
            pass
    return None, problem


# -- applying values ---------------------------------------------------------------------------------


def _coerce(parameter: ParameterNode, value: Any) -> tuple[Any, str | None]:
    """The value to store and an optional note; ``ValueError`` when it cannot be used.

    Scalars were already typed by the reply model. Containers arrive as JSON values (or JSON text)
    and must keep the parameter's type. Code that does not compile is still applied, as the core
    does with any new source: the next call returns an exception node with the bad line marked,
    which becomes feedback; the note says so now.
    """
    current = parameter._value
    if parameter.is_code:
        try:
            ast.parse(value)
        except SyntaxError as error:
            return value, (
                f"the new code does not compile (SyntaxError at line {error.lineno}: {error.msg}); "
                "its next call will report that as an exception node"
            )
        return value, None
    if current is None or isinstance(current, bool | int | float | str):
        return value, None
    if isinstance(current, list | tuple | dict) and isinstance(value, str):
        value = _literal(value)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, type(current)):
        raise ValueError(f"expected a {type(current).__name__}, got {type(value).__name__}")
    return value, None


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"could not read {short_repr(text, 60)!r} as a JSON value") from None


def _same(old: Any, new: Any) -> bool:
    try:
        equal = old == new
        return bool(equal) and type(old) is type(new)
    except Exception:  # values whose comparison raises (arrays) are treated as changed
        return False


def parameter_keys(parameters: Module | Iterable[ParameterNode]) -> dict[str, ParameterNode]:
    """Stable keys: attribute paths for a Module, else node names (``_2``, ... when names repeat)."""
    if isinstance(parameters, Module):
        return {path: parameter for path, parameter in parameters.named_parameters() if parameter.trainable}
    keyed: dict[str, ParameterNode] = {}
    for parameter in parameters:
        if not isinstance(parameter, ParameterNode):
            raise TypeError(f"optimizers take ParameterNodes or a Module, got {type(parameter).__name__}")
        if not parameter.trainable or parameter in keyed.values():
            continue
        key, suffix = parameter.name, 2
        while key in keyed:
            key, suffix = f"{parameter.name}_{suffix}", suffix + 1
        keyed[key] = parameter
    return keyed


class Optimizer(ABC):
    """Base of the LLM optimizers: ``zero_feedback()``, ``backward()``, ``step()``."""

    def __init__(
        self,
        parameters: Module | Iterable[ParameterNode],
        llm: LLMClient | None = None,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reply_format: ReplyFormat = "json",
    ) -> None:
        if reply_format not in OUTPUT_FORMATS:
            raise ValueError(f"reply_format must be one of {sorted(OUTPUT_FORMATS)}, got {reply_format!r}")
        self._keys = parameter_keys(parameters)
        self._key_by_parameter = {parameter: key for key, parameter in self._keys.items()}
        if not self._keys:
            raise ValueError("the optimizer got no trainable parameters")
        self.llm = llm
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.reply_format = reply_format

    @property
    def parameters(self) -> list[ParameterNode]:
        return list(self._keys.values())

    def named_parameters(self) -> list[tuple[str, ParameterNode]]:
        """(key, parameter) pairs; keys are what state dicts and StepResults use."""
        return list(self._keys.items())

    def key_of(self, parameter: ParameterNode) -> str:
        return self._key_by_parameter[parameter]

    # -- feedback ----------------------------------------------------------------------------------

    def zero_feedback(self) -> None:
        for parameter in self._keys.values():
            parameter.zero_feedback()

    def backward(self, output: Node, feedback: str | None = None) -> Subgraph:
        """``output.backward(feedback)``; an exception node's own explanation when ``feedback`` is None."""
        if feedback is None:
            if not isinstance(output, ExceptionNode):
                raise ValueError("feedback text is needed (only an exception node explains itself)")
            return output.backward()
        return output.backward(feedback)

    def feedback_records(self) -> list[Feedback]:
        """The feedback the parameters hold, each record once, in the order it was given."""
        seen: dict[int, Feedback] = {}
        for parameter in self._keys.values():
            for record in parameter.feedback:
                seen.setdefault(id(record), record)
        return list(seen.values())

    # -- state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Parameter values by key (deep copies, so later in-place edits do not leak in)."""
        return {key: copy.deepcopy(parameter._value) for key, parameter in self._keys.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = sorted(set(state) - set(self._keys))
        if unknown:
            raise KeyError(f"unknown parameters {unknown}; known: {sorted(self._keys)}")
        for key, value in state.items():
            self._keys[key].value = copy.deepcopy(value)

    def memory_state(self) -> dict[str, Any]:
        """What the optimizer remembers of past steps, as JSON values, for a trainer checkpoint;
        without it a resumed run would propose again what it already tried."""
        return {}

    def load_memory_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what ``memory_state`` returned."""

    def observe_score(self, score: float) -> None:  # noqa: B027 - optional hook
        """A numeric score of the current values (the trainer reports each minibatch's mean).

        OptoPrime reads text feedback and ignores it; OPRO keeps it in its history.
        """

    # -- the step ----------------------------------------------------------------------------------

    @abstractmethod
    def _messages(self) -> tuple[list[ChatMessage], dict[str, ParameterNode]] | None:
        """The prompt and the parameters it names (by the label it uses); None when there is nothing
        to ask (no feedback yet)."""

    def _after_step(self, result: StepResult) -> None:  # noqa: B027 - optional hook
        """Called after each step that asked the LLM (memory of past attempts lives here)."""

    def step(self) -> StepResult:
        """Ask the LLM for better values and apply them. Never raises on a bad reply."""
        if self.llm is None:
            raise RuntimeError("this optimizer has no LLM client: pass llm=LLMClient(...) to use step()")
        built = self._messages()
        if built is None:
            return StepResult(skipped="no parameter has feedback: call backward() on an output first")
        messages, labelled = built
        model = reply_model(labelled)
        prompt_chars = sum(len(message.content) for message in messages)
        with self.llm.track() as tracker:
            reply, raw, errors = self._ask(messages, model)
        result = StepResult(raw_reply=raw, errors=errors, prompt_chars=prompt_chars)
        if reply is not None:
            result.reasoning = reply.reasoning
            self._apply(suggested_values(reply), labelled, result)
        result.usage = tracker.usage
        self._after_step(result)
        return result

    def _ask(
        self, messages: list[ChatMessage], model: type[ReplyBase]
    ) -> tuple[ReplyBase | None, str | None, list[str]]:
        """The parsed reply (or None), the last raw reply text, and errors.

        ``LLMClient.structured`` does the same parse-and-re-ask but keeps the raw text to itself; a
        StepResult should show what the model actually wrote. In the tags format no schema is sent:
        a server constraining output to it would force JSON where tags were asked for.
        """
        assert self.llm is not None
        options: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.reply_format == "json":
            options["response_schema"] = reply_schema(model)
        raw: str | None = None
        try:
            reply = self.llm.chat(messages, **options)
            raw = reply.text
            parsed, problem = _read_reply(reply.text, model)
            if parsed is not None:
                return parsed, raw, []
            if reply.truncated:
                problem += " (The reply was cut off at max_tokens: keep it shorter.)"
            wanted = "the corrected JSON object" if self.reply_format == "json" else "the format asked for"
            correction = ChatMessage(
                role="user",
                content=f"Your reply could not be used. {problem}\nReply again with only {wanted}.",
            )
            again = [*messages, ChatMessage(role="assistant", content=reply.text), correction]
            second = self.llm.chat(again, **options)
            raw = second.text
            parsed, problem = _read_reply(second.text, model)
            if parsed is not None:
                return parsed, raw, []
            return None, raw, [f"the reply could not be used, even after re-asking once: {problem}"]
        except (LLMReplyError, LLMRequestError) as error:
            return None, raw, [f"the LLM call failed: {error}"]

    def _apply(self, values: dict[str, Any], labelled: dict[str, ParameterNode], result: StepResult) -> None:
        for label, value in values.items():
            parameter = labelled.get(label)
            if parameter is None:
                result.errors.append(f"the reply names {label!r}, which is not one of {sorted(labelled)}")
                continue
            key = self.key_of(parameter)
            old = parameter._value
            try:
                new, note = _coerce(parameter, value)
            except ValueError as error:
                result.errors.append(f"{key}: {error}; kept {short_repr(old, 80)}")
                continue
            if isinstance(new, float) and not math.isfinite(new):
                result.errors.append(f"{key}: {new} is not a finite number; kept {short_repr(old, 80)}")
                continue
            if _same(old, new):
                continue
            parameter.value = new
            result.updates.append(ParameterUpdate(name=key, old_value=old, new_value=new, note=note))
            if note is not None:
                result.errors.append(f"{key}: {note}")
