"""@bundle: recorded operations, exception nodes, and trainable code that is rewritten and re-run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trace_graph import (
    ExceptionNode,
    ExecutionError,
    MessageNode,
    Node,
    ParameterNode,
    bundle,
    graph_context,
    node,
)

OFFSET = 100  # a module global that rewritten code must still see


@pytest.fixture(autouse=True)
def fresh_names() -> Iterator[None]:
    with graph_context():
        yield


@bundle
def combine(first: str, second: str, separator: str = " ") -> str:
    """Join two texts."""
    return first + separator + second


@bundle(description="Parses an integer from text.", name="parse_int")
def parse(text: str) -> int:
    return int(text)


def test_one_operation_node_per_call() -> None:
    greeting = node("hello", name="greeting")
    result = combine(greeting, "world")
    assert isinstance(result, MessageNode)
    assert result.value == "hello world" and result.name == "combine"
    # Parents are the inputs in argument order; the plain value became a node named by its argument.
    assert result.parents[0] is greeting
    assert result.parents[1].name == "second" and result.parents[1].value == "world"
    assert len(result.parents) == 2 and result.parents[1].parents == ()
    assert list(result.inputs) == ["first", "second"] and result.inputs["first"] is greeting
    assert result.hidden_inputs == []
    operation = result.operation
    assert (operation.name, operation.docstring, operation.description) == (
        "combine",
        "Join two texts.",
        "Join two texts.",
    )
    assert operation.source is not None and operation.source.startswith("def combine(")
    assert "@bundle" not in operation.source
    assert operation.signature.startswith("def combine(first: str, second: str")


def test_keyword_and_variadic_arguments_are_named() -> None:
    @bundle
    def total(*numbers: int, scale: int = 1) -> int:
        return sum(numbers) * scale

    result = total(1, node(2, name="two"), scale=3)
    assert result.value == 9
    assert list(result.inputs) == ["numbers[0]", "numbers[1]", "scale"]
    assert result.inputs["numbers[1]"].name == "two"


def test_description_and_name_override() -> None:
    result = parse("42")
    assert result.value == 42 and result.name == "parse_int"
    assert result.description == "Parses an integer from text." and result.operation.name == "parse_int"


def test_chained_calls_build_a_graph() -> None:
    a = combine("a", "b")
    b = combine(a, "c", separator="-")
    assert b.value == "a b-c" and b.inputs["first"] is a
    assert b.inputs["separator"].value == "-"


def test_nodes_read_inside_the_body_become_parents() -> None:
    hint = node("be brief", name="hint", trainable=True)
    extra = node("!", name="extra")

    @bundle
    def ask(question: str, pieces: list[Node]) -> str:
        return f"{question} ({hint.value})" + "".join(piece.value for piece in pieces)

    result = ask("why?", [extra])
    assert result.value == "why? (be brief)!"
    assert set(result.hidden_inputs) == {hint, extra}
    assert list(result.inputs) == ["question", "pieces"]


def test_a_returned_node_is_unwrapped_and_linked() -> None:
    @bundle
    def outer(text: str) -> Node:
        return combine(text, "inner")

    result = outer("x")
    assert result.value == "x inner"
    (inner,) = result.hidden_inputs
    assert isinstance(inner, MessageNode) and inner.operation.name == "combine"


class Greeter:
    def __init__(self) -> None:
        self.salutation = node("Dear", name="salutation", trainable=True)

    @bundle
    def greet(self, person: str) -> str:
        """Greet someone."""
        return f"{self.salutation.value} {person}"


def test_methods_skip_self_and_see_instance_parameters() -> None:
    greeter = Greeter()
    result = greeter.greet("Ada")
    assert result.value == "Dear Ada"
    assert list(result.inputs) == ["person"] and result.hidden_inputs == [greeter.salutation]


# -- exceptions -----------------------------------------------------------------------------------


@bundle
def safe_ratio(a: float, b: float) -> float:
    """Divide a by b."""
    scaled = a * 2
    ratio = scaled / b
    return ratio


def test_exception_becomes_an_exception_node_with_the_line_marked() -> None:
    result = safe_ratio(1.0, 0.0)
    assert isinstance(result, ExceptionNode)
    assert result.value == "(ZeroDivisionError) float division by zero"
    assert (result.error_type, result.message) == ("ZeroDivisionError", "float division by zero")
    assert result.kind == "exception" and len(result.parents) == 2
    marked = [line for line in result.annotated_source.splitlines() if "<---" in line]
    assert marked == ["    ratio = scaled / b  <--- (ZeroDivisionError) float division by zero"]
    assert "ZeroDivisionError" in result.traceback and "ratio = scaled / b" in result.traceback
    assert "trace_graph" not in result.traceback  # the traceback starts in the user's code
    assert "float division by zero" in result.explanation() and "<---" in result.explanation()


def test_failing_helper_marks_the_calling_line() -> None:
    def helper(value: str) -> int:
        return int(value)

    @bundle
    def convert(text: str) -> int:
        cleaned = text.strip()
        return helper(cleaned)

    result = convert(" x ")
    assert isinstance(result, ExceptionNode)
    marked = [line for line in result.annotated_source.splitlines() if "<---" in line]
    assert len(marked) == 1 and marked[0].startswith("    return helper(cleaned)  <--- (ValueError)")
    assert "int(value)" in result.traceback


def test_wrong_arguments_mark_the_signature() -> None:
    result = safe_ratio(1.0)  # type: ignore[call-arg]
    assert isinstance(result, ExceptionNode) and result.error_type == "TypeError"
    first_line = result.annotated_source.splitlines()[0]
    assert first_line.startswith("def safe_ratio(a: float, b: float) -> float:  <--- (TypeError)")


def test_failure_flows_downstream_without_running_later_calls() -> None:
    calls = []

    @bundle
    def record(value: float) -> float:
        calls.append(value)
        return value

    failed = safe_ratio(1.0, 0.0)
    later = record(failed)
    assert isinstance(later, ExceptionNode) and calls == []
    assert later.value == failed.value and later.origin is failed and later.parents == (failed,)
    assert failed.origin is failed
    assert later.explanation().startswith("`record` failed because `safe_ratio` raised (ZeroDivisionError)")
    assert "<--- (ZeroDivisionError)" in later.explanation()


def test_uncaught_mode_raises_execution_error_carrying_the_node() -> None:
    @bundle(catch_execution_error=False)
    def strict_ratio(a: float, b: float) -> float:
        return a / b

    with pytest.raises(ExecutionError) as caught:
        strict_ratio(1, 0)
    assert isinstance(caught.value.node, ExceptionNode)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    assert "<--- (ZeroDivisionError) division by zero" in str(caught.value)


def test_nested_failure_points_at_the_inner_call() -> None:
    @bundle(catch_execution_error=False)
    def inner(x: int) -> int:
        return 10 // x

    @bundle
    def outer(x: int) -> int:
        doubled = 2 * x
        return inner(doubled - doubled).value

    result = outer(3)
    assert isinstance(result, ExceptionNode)
    assert result.value == "(ZeroDivisionError) integer division or modulo by zero"
    assert result.origin.operation.name == "inner" and result.origin in result.parents
    explanation = result.explanation()
    assert explanation.startswith("`outer` failed because `inner` raised (ZeroDivisionError)")
    assert "    return 10 // x  <--- (ZeroDivisionError)" in explanation
    assert "    return inner(doubled - doubled).value  <--- (ExecutionError)" in explanation


def test_keyboard_interrupt_is_not_swallowed() -> None:
    @bundle
    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupt()


# -- trainable code -------------------------------------------------------------------------------


def make_trainable() -> object:
    @bundle(trainable=True)
    def transform(a: int, b: int) -> int:
        """Combine two numbers."""
        return a + b

    return transform


def test_code_parameter_is_the_dedented_source_without_decorator() -> None:
    transform = make_trainable()
    code = transform.parameter  # type: ignore[attr-defined]
    assert isinstance(code, ParameterNode) and code.is_code and code.trainable
    assert code.name == "transform.code"
    assert code.value.split("\n") == [
        "def transform(a: int, b: int) -> int:",
        '    """Combine two numbers."""',
        "    return a + b",
    ]
    assert code.constraint == "keep the signature: def transform(a: int, b: int) -> int:"
    result = transform(2, 5)  # type: ignore[operator]
    assert result.value == 7 and result.hidden_inputs == [code]


def test_new_source_is_compiled_and_used_on_the_next_call() -> None:
    transform = make_trainable()
    before = transform(2, 5)  # type: ignore[operator]
    transform.parameter.value = "def transform(a, b):\n    return a * b + OFFSET"  # type: ignore[attr-defined]
    after = transform(2, 5)  # type: ignore[operator]
    assert (before.value, after.value) == (7, 110)
    # Each node keeps the source of the version that produced it.
    assert "a + b" in before.operation.source and "a * b" in after.operation.source


def test_rewritten_code_sees_closure_variables_and_strips_echoed_decorators() -> None:
    factor = 3

    @bundle(trainable=True)
    def scale(a: int) -> int:
        return a * factor

    scale.parameter.value = "@bundle(trainable=True)\ndef scale(a):\n    return (a + 1) * factor"
    assert scale(1).value == 6


def test_syntax_error_becomes_feedback_not_a_crash() -> None:
    transform = make_trainable()
    code = transform.parameter  # type: ignore[attr-defined]
    code.value = "def transform(a, b):\n    total = a +\n    return total"
    result = transform(1, 2)  # type: ignore[operator]
    assert isinstance(result, ExceptionNode) and result.error_type == "SyntaxError"
    assert result.annotated_source.splitlines()[1] == "    total = a +  <--- (SyntaxError) invalid syntax"
    assert code in result.parents
    result.backward()
    assert "SyntaxError" in code.feedback[0].text and "total = a +" in code.feedback[0].text

    code.value = "def transform(a, b):\n    total = a - b\n    return total"
    assert transform(1, 2).value == -1  # type: ignore[operator]


def test_runtime_error_in_rewritten_code_marks_its_line() -> None:
    transform = make_trainable()
    transform.parameter.value = "def transform(a, b):\n    x = a\n    return x / (b - b)"  # type: ignore[attr-defined]
    result = transform(1, 2)  # type: ignore[operator]
    assert isinstance(result, ExceptionNode)
    marked = result.annotated_source.splitlines()[2]
    assert marked == "    return x / (b - b)  <--- (ZeroDivisionError) division by zero"
    assert "return x / (b - b)" in result.traceback  # tracebacks show the new source's lines


def test_bad_replacements_are_reported() -> None:
    transform = make_trainable()
    code = transform.parameter  # type: ignore[attr-defined]
    code.value = "def other(a, b):\n    return 0"
    missing = transform(1, 2)  # type: ignore[operator]
    assert isinstance(missing, ExceptionNode) and "def transform(a: int, b: int) -> int:" in missing.message
    code.value = 42
    wrong_type = transform(1, 2)  # type: ignore[operator]
    assert isinstance(wrong_type, ExceptionNode) and wrong_type.error_type == "TypeError"
    code.value = "import not_a_real_module_xyz\ndef transform(a, b):\n    return 0"
    failed_import = transform(1, 2)  # type: ignore[operator]
    assert isinstance(failed_import, ExceptionNode) and failed_import.error_type == "ModuleNotFoundError"
    assert "<--- (ModuleNotFoundError)" in failed_import.annotated_source.splitlines()[0]


def test_syntax_error_raises_in_uncaught_mode() -> None:
    @bundle(trainable=True, catch_execution_error=False)
    def double(x: int) -> int:
        return 2 * x

    double.parameter.value = "def double(x):\n    return 2 *"
    with pytest.raises(ExecutionError) as caught:
        double(1)
    assert caught.value.node.error_type == "SyntaxError"


class Solver:
    @bundle(trainable=True)
    def solve(self, x: int) -> int:
        return x + 1


def test_each_instance_learns_its_own_method_code() -> None:
    first, second = Solver(), Solver()
    first_code = first.solve.parameter
    assert first_code is not second.solve.parameter and first_code is first.solve.parameter
    assert first_code.constraint == "keep the signature: def solve(self, x: int) -> int:"
    first_code.value = "def solve(self, x):\n    return x * 10"
    assert (first.solve(2).value, second.solve(2).value) == (20, 3)
    assert list(first.solve(2).inputs) == ["x"]


def test_trainable_needs_source() -> None:
    namespace: dict[str, object] = {}
    exec("def generated(x):\n    return x", namespace)
    with pytest.raises(ValueError, match="source"):
        bundle(trainable=True)(namespace["generated"])  # type: ignore[arg-type]
    assert bundle(namespace["generated"])(1).operation.source is None  # type: ignore[arg-type]


def test_async_functions_are_rejected() -> None:
    async def fetch() -> int:
        return 1

    with pytest.raises(TypeError, match="async"):
        bundle(fetch)
