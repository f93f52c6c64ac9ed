"""``Module`` / ``@model``: group the parameters of a workflow (an agent class) and save them as JSON.

A Module finds its parameters by looking at itself: ``ParameterNode`` attributes, the code of its
trainable bundled methods (``<method>.code``), nested Modules and lists/tuples/dicts of those. Names
are attribute paths (``prompt``, ``solver.solve.code``, ``tools.0.threshold``), stable across runs, so
they key the saved JSON. The file is meant to be read and diffed: values are written as they are
(strings, numbers, lists, dicts) and code as a list of lines. No pickle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from trace_graph.bundle import Bundle
from trace_graph.context import current_context
from trace_graph.nodes import Node, ParameterNode

FORMAT = "optitrace.parameters/1"
_PRIVATE_PREFIX = "__trace_code_"  # where bundled methods keep each instance's code (see bundle.py)


class Module:
    """Base class for workflows with parameters. No ``__init__`` to call: discovery is by inspection."""

    def __setattr__(self, attribute: str, value: Any) -> None:
        # `self.prompt = node("...", trainable=True)` names the node after the attribute, unless it
        # was named explicitly: the LLM then reads `prompt`, not `parameter_3`.
        if isinstance(value, Node) and value._auto_named:
            value.name = current_context().unique_name(attribute)
            value._auto_named = False
        super().__setattr__(attribute, value)

    def named_parameters(self) -> list[tuple[str, ParameterNode]]:
        """(attribute path, parameter) pairs; a parameter reachable twice is listed once."""
        found: dict[ParameterNode, str] = {}
        for path, parameter in _walk(self, "", set()):
            found.setdefault(parameter, path)
        return [(path, parameter) for parameter, path in found.items()]

    def parameters(self) -> list[ParameterNode]:
        return [parameter for _, parameter in self.named_parameters()]

    def state_dict(self) -> dict[str, Any]:
        """Parameter values by name."""
        return {path: parameter._value for path, parameter in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Set parameter values by name. Code parameters take effect (recompile) on their next call.

        With ``strict``, names missing from ``state`` or unknown to this module are an error.
        """
        parameters = dict(self.named_parameters())
        if strict:
            missing = sorted(set(parameters) - set(state))
            unknown = sorted(set(state) - set(parameters))
            if missing or unknown:
                raise KeyError(f"state does not match the module: missing {missing}, unknown {unknown}")
        for path, value in state.items():
            if path in parameters:
                parameters[path].value = _from_json(value, parameters[path])

    def save(self, path: str | Path) -> None:
        """Write the parameters as readable JSON (values must be JSON values: str, number, list, ...)."""
        parameters: dict[str, Any] = {}
        for name, parameter in self.named_parameters():
            value = parameter._value
            if parameter.is_code and isinstance(value, str):
                value = value.split("\n")  # one line per JSON string: diffs show changed lines
            try:
                json.dumps(value)
            except (TypeError, ValueError) as error:
                raise TypeError(f"parameter {name!r} holds a value JSON cannot store: {error}") from None
            parameters[name] = value
        document = {"format": FORMAT, "parameters": parameters}
        Path(path).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def load(self, path: str | Path, strict: bool = True) -> None:
        """Read parameters written by ``save``."""
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"{path} is not an OptiTrace parameter file (expected format {FORMAT!r})")
        self.load_state_dict(document["parameters"], strict=strict)


def _from_json(value: Any, parameter: ParameterNode) -> Any:
    if parameter.is_code and isinstance(value, list):
        return "\n".join(value)
    if isinstance(parameter._value, tuple) and isinstance(value, list):  # JSON has no tuples
        return tuple(value)
    return value


def _walk(owner: object, prefix: str, seen: set[int]) -> Iterator[tuple[str, ParameterNode]]:
    """(path, parameter) pairs reachable from ``owner``, in attribute order."""
    if id(owner) in seen:  # cycles (a child module pointing back at its parent)
        return
    seen.add(id(owner))
    if isinstance(owner, Module):
        # Trainable bundled methods, in class definition order (base classes first).
        for cls in reversed(type(owner).__mro__):
            for attribute, member in vars(cls).items():
                if isinstance(member, Bundle) and member.trainable:
                    code = member.parameter_of(owner)
                    if code is not None:
                        yield f"{prefix}{attribute}.code", code
        items: Iterator[tuple[str, Any]] = (
            (name, value) for name, value in vars(owner).items() if not name.startswith(_PRIVATE_PREFIX)
        )
    elif isinstance(owner, dict):
        items = ((str(key), value) for key, value in owner.items())
    else:  # list or tuple
        items = ((str(index), value) for index, value in enumerate(owner))  # type: ignore[call-overload]
    for name, value in items:
        path = f"{prefix}{name}"
        if isinstance(value, ParameterNode):
            yield path, value
        elif isinstance(value, Bundle) and value.trainable and value.parameter is not None:
            yield f"{path}.code", value.parameter
        elif isinstance(value, Module | list | tuple | dict):
            yield from _walk(value, f"{path}.", seen)


T = TypeVar("T")


def model(cls: type[T]) -> type[T]:
    """Class decorator: the class gains Module's ``parameters()``, ``save()``, ``load()``, ..."""
    if issubclass(cls, Module):
        return cls
    wrapped = type(cls.__name__, (cls, Module), {"__doc__": cls.__doc__, "__module__": cls.__module__})
    wrapped.__qualname__ = cls.__qualname__
    return wrapped  # type: ignore[return-value]
