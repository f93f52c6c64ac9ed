"""``@bundle``: turn a Python function into one recorded operation of the graph.

Calling a bundled function with nodes or plain values runs the function on the plain values and
returns a ``MessageNode`` (the result is ``.value``) whose parents are the inputs. Plain values become
input nodes named after their argument. Nodes the body reads itself (``self.prompt.value`` in a
method, nodes inside a list argument) are recorded as parents too, so the graph never misses a
dependency, and no caller frame is inspected (Trace's ``f_locals`` capture breaks on Python 3.13).

Errors: with ``catch_execution_error=True`` (the default) a call that raises *returns* an
``ExceptionNode``; its value is ``"(ErrType) message"`` and it keeps the source with the failing line
marked, so ``out.backward()`` hands the optimizer exactly where things broke. Later bundled calls that
receive it are not run and return an ``ExceptionNode`` pointing at it, so the failure reaches the final
output like a NaN. With ``catch_execution_error=False`` the call raises ``ExecutionError`` instead,
carrying the same node (``err.node.backward()``).

Trainable code: with ``trainable=True`` the function's source (dedented, decorators stripped) is a
``ParameterNode`` named ``<function>.code``. Give it new source and the next call compiles and runs
it; code that does not compile makes the call return an ``ExceptionNode`` with the bad line marked,
instead of crashing. On methods, each instance gets its own code parameter.

Return values: one node per call. A tuple result is one node whose value is the tuple; unpack it with
another bundled function if each part should be its own node.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import itertools
import linecache
import textwrap
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, overload

from trace_graph.context import start_recording_reads, stop_recording_reads
from trace_graph.nodes import (
    ExceptionNode,
    ExecutionError,
    MessageNode,
    Node,
    Operation,
    ParameterNode,
)


@dataclass(frozen=True, slots=True)
class _Failure:
    error_type: str
    message: str
    annotated_source: str | None
    traceback: str


@dataclass(frozen=True, slots=True)
class _Version:
    """One version of a function's code: what runs and how its line numbers map to its source."""

    function: Callable[..., Any] | None
    operation: Operation
    first_lineno: int  # line number, in the code object's file, of the source's first line
    failure: _Failure | None = None  # set when this version did not compile


def mark_line(source: str | None, line_index: int, comment: str) -> str | None:
    """The source with ``  <--- comment`` appended to line ``line_index`` (0-based)."""
    if source is None:
        return None
    lines = source.splitlines()
    if 0 <= line_index < len(lines):
        lines[line_index] += f"  <--- {comment}"
    return "\n".join(lines)


def _first_line(message: str) -> str:
    return message.splitlines()[0] if message else ""


def _function_source(function: Callable[..., Any]) -> tuple[str, int, str] | None:
    """The dedented source starting at the ``def`` line, that line's number in its file, and the
    signature as written (``def f(a: int, b=2) -> int:``)."""
    try:
        lines, start = inspect.getsourcelines(function)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):  # builtins, REPL, lambdas inside expressions
        return None
    definition = tree.body[0]
    if not isinstance(definition, ast.FunctionDef):
        return None
    source = "".join(textwrap.dedent("".join(lines)).splitlines(keepends=True)[definition.lineno - 1 :])
    # The header as written: under `from __future__ import annotations` inspect.signature would quote
    # every annotation.
    header = ast.FunctionDef(**{**vars(definition), "body": [ast.Pass()], "decorator_list": []})
    signature = ast.unparse(header).rsplit("\n", 1)[0]
    return source.rstrip("\n"), start + definition.lineno - 1, signature


class Bundle:
    """A function whose calls are recorded as graph operations. Made by ``@bundle``."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        trainable: bool = False,
        catch_execution_error: bool = True,
        description: str | None = None,
        name: str | None = None,
    ) -> None:
        if inspect.iscoroutinefunction(function) or inspect.isgeneratorfunction(function):
            raise TypeError(f"bundle supports plain functions; {function.__name__} is async or a generator")
        functools.update_wrapper(self, function)
        self.function = function
        self.name = name or function.__name__
        self.trainable = trainable
        self.catch_execution_error = catch_execution_error
        self.docstring = inspect.getdoc(function) or ""
        self.description = description or self.docstring

        positional, varargs = [], None
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                positional.append(parameter.name)
            elif parameter.kind is parameter.VAR_POSITIONAL:
                varargs = parameter.name
        self._positional = tuple(positional)
        self._varargs = varargs or "arg"

        found = _function_source(function)
        if found is None and trainable:
            raise ValueError(f"a trainable bundle needs the source of {function.__name__}; none is available")
        fallback_signature = f"def {function.__name__}{inspect.signature(function)}:"
        source, def_lineno, self.signature = found or (None, 0, fallback_signature)
        self.original = _Version(function, self._operation(source, self.docstring), def_lineno)
        self._versions = itertools.count(1)
        self._shared_slot: _CodeSlot | None = None  # created on first use (methods use per-instance slots)
        self._slot_lock = threading.Lock()
        self._instance_key = f"__trace_code_{self.name}"

    # -- code versions ---------------------------------------------------------------------------

    def _operation(self, source: str | None, docstring: str) -> Operation:
        return Operation(self.name, docstring, source, self.signature, self.description)

    def _compile(self, source: Any) -> _Version:
        """Compile new source for the function; a failure becomes a version that reports it."""
        filename = f"<{self.name}.code v{next(self._versions)}>"
        text = source if isinstance(source, str) else repr(source)
        operation = self._operation(text, self.docstring)
        if not isinstance(source, str):
            failure = _Failure("TypeError", f"code must be a string, got {type(source).__name__}", None, "")
            return _Version(None, operation, 1, failure)
        # Registered so tracebacks through the new code show its lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        namespace = self._namespace()
        try:
            tree = ast.parse(source, filename)
            for statement in tree.body:  # an echoed `@bundle(...)` line would wrap the function again
                if isinstance(statement, ast.FunctionDef):
                    statement.decorator_list = []
            exec(compile(tree, filename, "exec"), namespace)
        except SyntaxError as error:
            comment = f"(SyntaxError) {error.msg}"
            annotated = mark_line(source, (error.lineno or 1) - 1, comment)
            tb_text = "".join(traceback.format_exception_only(error))
            return _Version(None, operation, 1, _Failure("SyntaxError", error.msg, annotated, tb_text))
        except Exception as error:  # e.g. a NameError in a default value or a failing import
            failure = _describe_failure(error, _Version(None, operation, 1), filename)
            return _Version(None, operation, 1, failure)
        function = namespace.get(self.function.__name__)
        if not callable(function):
            message = f"the code must define the function: {self.signature}"
            failure = _Failure("NameError", message, mark_line(text, 0, message), "")
            return _Version(None, operation, 1, failure)
        docstring = inspect.getdoc(function) or ""
        return _Version(function, self._operation(text, docstring), 1)

    def _namespace(self) -> dict[str, Any]:
        # A snapshot of the original globals plus the values of its closure, so the new code sees the
        # names the original saw without writing into the defining module.
        namespace = dict(self.function.__globals__)
        closure = self.function.__closure__ or ()
        for variable, cell in zip(self.function.__code__.co_freevars, closure, strict=True):
            with contextlib.suppress(ValueError):  # a cell not filled yet
                namespace[variable] = cell.cell_contents
        return namespace

    def _slot(self, instance: object | None) -> _CodeSlot:
        if instance is not None and self.trainable:
            state = getattr(instance, "__dict__", None)
            if state is not None:  # each instance learns its own code
                slot = state.get(self._instance_key)
                if slot is None:
                    with self._slot_lock:  # two threads must not create two code parameters
                        slot = state.get(self._instance_key)
                        if slot is None:
                            slot = state[self._instance_key] = _CodeSlot(self)
                return slot
        if self._shared_slot is None:
            with self._slot_lock:
                if self._shared_slot is None:
                    self._shared_slot = _CodeSlot(self)
        return self._shared_slot

    @property
    def parameter(self) -> ParameterNode | None:
        """The code parameter (``trainable=True``), shared by calls not bound to an instance."""
        return self._slot(None).parameter

    def parameter_of(self, instance: object) -> ParameterNode | None:
        """The code parameter used when this bundled method is called on ``instance``."""
        return self._slot(instance).parameter

    # -- calling ---------------------------------------------------------------------------------

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        return self if instance is None else BoundBundle(self, instance)

    def __call__(self, *args: Any, **kwargs: Any) -> MessageNode:
        return self._call(self._slot(None), None, args, kwargs)

    def _call(
        self, slot: _CodeSlot, instance: object | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> MessageNode:
        version = slot.current()
        names = self._positional if instance is None else self._positional[1:]
        arg_names: list[str] = []
        parents: list[Node] = []
        values: list[Any] = []
        for index, arg in enumerate(args):
            arg_name = names[index] if index < len(names) else f"{self._varargs}[{index - len(names)}]"
            input_node = arg if isinstance(arg, Node) else Node(arg, arg_name)
            arg_names.append(arg_name)
            parents.append(input_node)
            values.append(input_node._value)
        keyword_values: dict[str, Any] = {}
        for key, arg in kwargs.items():
            input_node = arg if isinstance(arg, Node) else Node(arg, key)
            arg_names.append(key)
            parents.append(input_node)
            keyword_values[key] = input_node._value
        if slot.parameter is not None:
            parents.append(slot.parameter)

        for parent in parents:
            if isinstance(parent, ExceptionNode):  # do not run on a failed input; pass the failure on
                origin = parent.origin
                failure = _Failure(
                    origin.error_type,
                    origin.message,
                    None,
                    f"not run: an input is the failed output of `{origin.operation.name}`",
                )
                return self._fail(version, parents, arg_names, failure, origin)
        if version.failure is not None:
            return self._fail(version, parents, arg_names, version.failure)

        reads, token = start_recording_reads()
        error: Exception | None = None
        try:
            if instance is None:
                result = version.function(*values, **keyword_values)  # type: ignore[misc]
            else:
                result = version.function(instance, *values, **keyword_values)  # type: ignore[misc]
        except Exception as raised:
            error = raised
        finally:
            stop_recording_reads(token)

        if reads:  # nodes the body read by itself are inputs too
            known = set(parents)
            parents.extend(read for read in reads if read not in known)
        if error is not None:
            try:
                failure, origin = _describe_failure(error, version), None
                if isinstance(error, ExecutionError):  # a nested bundled call failed: point at it
                    if error.node not in parents:
                        parents.append(error.node)
                    origin = error.node.origin
                    failure = _Failure(
                        origin.error_type, origin.message, failure.annotated_source, failure.traceback
                    )
                return self._fail(version, parents, arg_names, failure, origin, cause=error)
            finally:
                error = None  # its traceback holds this frame: drop the cycle so the graph can be freed
        if isinstance(result, Node):  # the body returned a node (e.g. from a nested bundled call)
            if result not in parents:
                parents.append(result)
            result = result._value
        return MessageNode(result, version.operation, tuple(parents), tuple(arg_names))

    def _fail(
        self,
        version: _Version,
        parents: list[Node],
        arg_names: list[str],
        failure: _Failure,
        origin: ExceptionNode | None = None,
        cause: BaseException | None = None,
    ) -> ExceptionNode:
        node = ExceptionNode(
            version.operation,
            tuple(parents),
            tuple(arg_names),
            failure.error_type,
            failure.message,
            failure.annotated_source,
            failure.traceback,
            origin,
        )
        if not self.catch_execution_error:
            raise ExecutionError(node) from cause
        return node

    def __repr__(self) -> str:
        return f"<bundle {self.name}{' (trainable)' if self.trainable else ''}>"


def _describe_failure(error: Exception, version: _Version, filename: str | None = None) -> _Failure:
    """The error, the source with the failing line marked, and the traceback from the body down.

    Frames of the body are those running the version's function, or code compiled from ``filename``.
    """
    code = getattr(version.function, "__code__", None)
    body_frames: TracebackType | None = None
    failing_line: int | None = None
    frame = error.__traceback__
    while frame is not None:
        frame_code = frame.tb_frame.f_code
        if frame_code is code or (filename is not None and frame_code.co_filename == filename):
            body_frames = body_frames or frame
            failing_line = frame.tb_lineno  # the deepest line of the body: where it went wrong
        frame = frame.tb_next
    message = str(error)
    comment = f"({type(error).__name__}) {_first_line(message)}"
    # No frame in the body means the call itself failed (e.g. wrong arguments): mark the signature.
    line_index = 0 if failing_line is None else failing_line - version.first_lineno
    annotated = mark_line(version.operation.source, line_index, comment)
    if body_frames is not None:
        tb_text = "".join(traceback.format_exception(type(error), error, body_frames))
    else:
        tb_text = "".join(traceback.format_exception_only(type(error), error))
    return _Failure(type(error).__name__, message, annotated, tb_text)


class _CodeSlot:
    """The code in use by a bundled function (or by one instance's bundled method)."""

    __slots__ = ("bundle", "parameter", "version")

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.version = bundle.original
        self.parameter: ParameterNode | None = None
        if bundle.trainable:
            self.parameter = ParameterNode(
                bundle.original.operation.source,
                name=f"{bundle.name}.code",
                description=f"The Python source code of `{bundle.name}`. {bundle.docstring}".strip(),
                constraint=f"keep the signature: {bundle.signature}",
                is_code=True,
            )

    def current(self) -> _Version:
        """The version to run, recompiled first if the parameter's source changed."""
        if self.parameter is not None and self.parameter._value != self.version.operation.source:
            self.version = self.bundle._compile(self.parameter._value)
        return self.version


class BoundBundle:
    """A bundled method bound to an instance (what ``instance.method`` returns)."""

    __slots__ = ("bundle", "instance")

    def __init__(self, bundle: Bundle, instance: object) -> None:
        self.bundle = bundle
        self.instance = instance

    def __call__(self, *args: Any, **kwargs: Any) -> MessageNode:
        bundle = self.bundle
        return bundle._call(bundle._slot(self.instance), self.instance, args, kwargs)

    @property
    def parameter(self) -> ParameterNode | None:
        return self.bundle.parameter_of(self.instance)

    @property
    def __name__(self) -> str:
        return self.bundle.name

    def __repr__(self) -> str:
        return f"<bound {self.bundle!r} of {self.instance!r}>"


@overload
def bundle(function: Callable[..., Any], /) -> Bundle: ...


@overload
def bundle(
    function: None = None,
    /,
    *,
    trainable: bool = False,
    catch_execution_error: bool = True,
    description: str | None = None,
    name: str | None = None,
) -> Callable[[Callable[..., Any]], Bundle]: ...


def bundle(
    function: Callable[..., Any] | None = None,
    /,
    *,
    trainable: bool = False,
    catch_execution_error: bool = True,
    description: str | None = None,
    name: str | None = None,
) -> Bundle | Callable[[Callable[..., Any]], Bundle]:
    """Record each call of the decorated function as one operation node (see the module docstring).

    Use as ``@bundle`` or ``@bundle(trainable=True, ...)``. ``description`` defaults to the docstring;
    ``name`` (default: the function's name) names the output nodes and the ``<name>.code`` parameter.
    """

    def wrap(function: Callable[..., Any]) -> Bundle:
        return Bundle(
            function,
            trainable=trainable,
            catch_execution_error=catch_execution_error,
            description=description,
            name=name,
        )

    return wrap if function is None else wrap(function)
