"""The IR's expression language: parsed with `ast`, walked through a whitelist, never `eval`ed.

An expression is compiled ONCE into a tree of closures, then evaluated once per constraint
instance. Compilation does the static work: name resolution, index counts, which sets an index
runs over, and the polynomial degree of every sub-expression (so "x * y in a linear model" is
found without any data). Evaluation is generic over the value type of variables through a tiny
`Algebra`: Pyomo `VarData` when building a model, plain floats when checking a solution. Both
backends use Python's own operators, so one walker serves both.

Errors are `ExpressionError`s naming the component ("constraint capacity[Boston]"), the
offending source text and what to do about it; they are read by people and by LLMs.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from solvers.ir import Constraint, Formulation
from solvers.symbols import (
    Element,
    ExpressionError,
    FormulationError,
    MissingValueError,
    ParameterInfo,
    SetInfo,
    SymbolTable,
    VariableInfo,
    _listing,
    _suggest,
    element_key,
    instance_name,
)

__all__ = [
    "NONLINEAR",
    "Algebra",
    "CompiledConstraint",
    "CompiledFormulation",
    "Compiler",
    "Element",
    "ExpressionError",
    "FloatAlgebra",
    "FormulationError",
    "MissingValueError",
    "Node",
    "ParameterInfo",
    "Relation",
    "SetInfo",
    "SymbolTable",
    "VariableInfo",
    "compile_formulation",
    "element_key",
    "evaluate",
    "instance_name",
]

Env = dict[str, Element]
T = TypeVar("T")

# Polynomial degree of a sub-expression; constants are 0. Anything that is not a polynomial
# (division by a variable, abs of a variable, x ** 0.5) gets NONLINEAR.
NONLINEAR = 99
ALLOWED_FUNCTIONS = ("sum", "abs", "min", "max")


# --- the algebra a walker evaluates in --------------------------------------------------------
class Algebra(Protocol[T]):
    """What a backend supplies; arithmetic uses Python's operators on its values."""

    def variable_getter(self, variable: VariableInfo) -> Callable[[Any], T]:
        """Key -> value of one variable instance. Keys follow Pyomo: () for a scalar, the
        element itself for one index set, a tuple of elements for several."""
        ...

    def total(self, terms: list[Any]) -> Any: ...


class FloatAlgebra:
    """Variables are floats looked up by Pyomo name in `values`."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def variable_getter(self, variable: VariableInfo) -> Callable[[Any], float]:
        values, name = self.values, variable.name

        def get(key: Any) -> float:
            label = instance_name(name, key if isinstance(key, tuple) else (key,))
            found = values.get(label)
            if found is None:
                raise MissingValueError(label)
            return found

        return get

    def total(self, terms: list[Any]) -> float:
        return math.fsum(terms)


# --- compiled nodes ---------------------------------------------------------------------------
Kind = Literal["number", "element", "bool"]


@dataclass(frozen=True)
class Node:
    """One compiled sub-expression: `fn(env)` evaluates it."""

    fn: Callable[[Env], Any]
    degree: int
    kind: Kind = "number"  # static type when degree == 0
    token: str = ""
    index_set: str | None = None  # set of a bare index name
    variables: frozenset[str] = frozenset()
    literal: Any = None  # value of a compile-time constant (numbers and strings)
    is_literal: bool = False


@dataclass(frozen=True)
class Relation:
    """A compiled constraint: `parts` joined by `ops`, e.g. (lhs, rhs) with ("<=",)."""

    parts: tuple[Node, ...]
    ops: tuple[str, ...]
    token: str

    @property
    def degree(self) -> int:
        return max(p.degree for p in self.parts)

    def evaluate(self, env: Env) -> tuple[Any, ...]:
        return tuple(p.fn(env) for p in self.parts)


class _Fail(Exception):
    """A runtime problem found while evaluating one instance; becomes an `ExpressionError`."""

    def __init__(self, message: str, token: str) -> None:
        self.message, self.token = message, token
        super().__init__(message)


def _missing_entry(param: ParameterInfo, key: tuple[Element, ...], token: str) -> _Fail:
    return _Fail(
        f"parameter {param.name} has no entry for ({', '.join(map(str, key))}) and no default; "
        f'add the entry to its table or give it a "default".',
        token,
    )


_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
    ast.Mod: "%",
    ast.FloorDiv: "//",
}
_COMPARE_SYMBOL: dict[type[ast.cmpop], str] = {
    ast.LtE: "<=",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.Lt: "<",
    ast.Gt: ">",
    ast.NotEq: "!=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_SYNTAX_HINTS: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access (a.b) is not supported; "
    "refer to sets, parameters and variables by name, e.g. x[i, j]",
    ast.Lambda: "lambda is not part of the expression language; write the algebra directly",
    ast.IfExp: "conditional expressions (a if c else b) are not supported; "
    "filter instances with `where` or with `if` inside sum(...)",
    ast.ListComp: "list comprehensions are not supported; use sum(... for i in S)",
    ast.List: "lists are not supported; use sum(... for i in S) or index a parameter",
    ast.Dict: "dict literals are not supported; put data in a parameter table",
    ast.Set: "set literals are not supported; declare an index set",
    ast.Starred: "starred expressions are not supported",
    ast.JoinedStr: "f-strings are not supported; write element names as plain strings, e.g. x['Boston']",
    ast.NamedExpr: "assignment expressions (:=) are not supported",
    ast.Slice: "slices (a:b) are not supported; index with one element per index set",
}


def _op_symbol(op: ast.AST) -> str:
    return _BINOPS.get(type(op), type(op).__name__)  # type: ignore[arg-type]


class Compiler(Generic[T]):
    """Compiles expression strings of one formulation against its symbol table and an algebra.

    `kind` is the formulation's claim ("linear" forbids products of variable expressions,
    "quadratic" allows degree 2, "nonlinear" anything Pyomo can express); `component` names
    the part being compiled in error messages.
    """

    def __init__(self, table: SymbolTable, algebra: Algebra[T], kind: str = "linear") -> None:
        self.table = table
        self.algebra = algebra
        self.kind = kind
        self.max_degree = {"linear": 1, "quadratic": 2}.get(kind, NONLINEAR)
        self._getters: dict[str, Callable[[Any], T]] = {}
        self._source = ""
        self._component = ""

    # -- entry points ---------------------------------------------------------------------
    def expression(self, source: str, scope: dict[str, str], component: str) -> Node:
        tree = self._parse(source, component)
        node = self._value(tree.body, dict(scope))
        if node.kind == "element" and node.degree == 0:
            raise self._error(f"{node.token!r} is a set element, not a number.", tree.body)
        return node

    def condition(self, source: str, scope: dict[str, str], component: str) -> Node:
        tree = self._parse(source, component)
        return self._condition(tree.body, dict(scope))

    def relation(self, source: str, scope: dict[str, str], component: str) -> Relation:
        tree = self._parse(source, component)
        body = tree.body
        if not isinstance(body, ast.Compare):
            raise self._error(
                "a constraint needs a comparison: `lhs <= rhs`, `lhs >= rhs`, `lhs == rhs` "
                "or a range `lo <= expr <= hi`.",
                body,
            )
        ops = tuple(_COMPARE_SYMBOL.get(type(op), "?") for op in body.ops)
        for op in ops:
            if op in ("<", ">"):
                raise self._error(
                    f"strict inequality `{op}` is not allowed in a constraint (solvers cannot "
                    f"enforce it); use `{op}=`.",
                    body,
                )
            if op not in ("<=", ">=", "=="):
                raise self._error(f"`{op}` is not a constraint comparison; use <=, >= or ==.", body)
        if len(ops) > 2:
            raise self._error("at most one range `lo <= expr <= hi` per constraint; split it.", body)
        if len(ops) == 2 and (ops[0] != ops[1] or ops[0] == "=="):
            raise self._error(
                "a range must read `lo <= expr <= hi` or `hi >= expr >= lo`; split it into two constraints.",
                body,
            )
        parts = tuple(self._value(n, dict(scope)) for n in [body.left, *body.comparators])
        for part in parts:
            if part.degree == 0 and part.kind == "element":
                raise self._error(f"{part.token!r} is a set element, not a number.", body)
        if len(parts) == 3:
            for outer in (parts[0], parts[2]):
                if outer.degree > 0:
                    raise self._error(
                        "the outer parts of a range `lo <= expr <= hi` must be data (no variables); "
                        "split it into two constraints.",
                        body,
                        token=outer.token,
                    )
        relation = Relation(parts, ops, self._segment(body))
        if relation.degree > 1 and self.kind != "nonlinear":
            raise self._error(
                "this constraint is quadratic; HiGHS accepts quadratic terms only in the objective. "
                'Linearize it, or declare kind "nonlinear" (HiGHS will then not solve it).',
                body,
            )
        return relation

    # -- helpers --------------------------------------------------------------------------
    def _parse(self, source: str, component: str) -> ast.Expression:
        self._source, self._component = source, component
        try:
            return ast.parse(source.strip(), mode="eval")
        except SyntaxError as error:
            column = (error.offset or 1) - 1
            near = source.strip()[max(0, column - 10) : column + 10]
            raise ExpressionError(
                f"cannot parse the expression ({error.msg} at column {column + 1}). "
                "Write Python-like algebra, e.g. sum(c[i] * x[i] for i in S) <= b.",
                component=component,
                token=near or source,
            ) from None

    def _segment(self, node: ast.AST) -> str:
        return ast.get_source_segment(self._source.strip(), node) or ast.unparse(node)

    def _error(self, message: str, node: ast.AST, token: str | None = None) -> ExpressionError:
        return ExpressionError(message, component=self._component, token=token or self._segment(node))

    def _getter(self, variable: VariableInfo) -> Callable[[Any], T]:
        if variable.name not in self._getters:
            self._getters[variable.name] = self.algebra.variable_getter(variable)
        return self._getters[variable.name]

    def _undefined(self, name: str, node: ast.AST, scope: dict[str, str]) -> ExpressionError:
        if name in self.table.broken:
            return self._error(f"{name} cannot be used until the errors in its declaration are fixed.", node)
        candidates = [*scope, *self.table.names()]
        in_scope = f" Indices in scope: {', '.join(scope)}." if scope else " No index is in scope here."
        return self._error(
            f"name {name!r} is not defined.{_suggest(name, candidates)}{in_scope} "
            "Declare it as a set, parameter or variable, or bind it with `for_all` / `for ... in`.",
            node,
        )

    # -- values ---------------------------------------------------------------------------
    def _value(self, node: ast.AST, scope: dict[str, str]) -> Node:
        token = self._segment(node)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise self._error(
                    f"literal {value!r} is not supported; use numbers or 'element' strings.", node
                )
            kind: Kind = "element" if isinstance(value, str) else "number"
            return Node(lambda env, v=value: v, 0, kind, token, literal=value, is_literal=True)
        if isinstance(node, ast.Name):
            return self._name(node, scope, token)
        if isinstance(node, ast.Subscript):
            return self._subscript(node, scope, token)
        if isinstance(node, ast.BinOp):
            return self._binop(node, scope, token)
        if isinstance(node, ast.UnaryOp):
            operand = self._value(node.operand, scope)
            if isinstance(node.op, ast.USub | ast.UAdd):
                self._require_number(operand, node)
                if isinstance(node.op, ast.UAdd):
                    return operand
                f = operand.fn
                return Node(lambda env: -f(env), operand.degree, "number", token, variables=operand.variables)
            raise self._error("`not` belongs in filters (`where`, `if`), not in algebra.", node)
        if isinstance(node, ast.Call):
            return self._call(node, scope, token)
        if isinstance(node, ast.Compare | ast.BoolOp):
            raise self._error(
                "comparisons and and/or belong at the top of a constraint or in a filter "
                "(`where`, `if` inside sum), not inside an algebraic expression.",
                node,
            )
        if isinstance(node, ast.GeneratorExp):
            raise self._error("a generator must be the argument of sum(...), min(...) or max(...).", node)
        if isinstance(node, ast.Tuple):
            raise self._error("tuples are only allowed as indices, e.g. x[i, j].", node)
        hint = _SYNTAX_HINTS.get(
            type(node), f"{type(node).__name__} syntax is not part of the expression language"
        )
        raise self._error(hint + ".", node)

    def _name(self, node: ast.Name, scope: dict[str, str], token: str) -> Node:
        name = node.id
        if name in scope:
            index_set = self.table.sets[scope[name]]
            kind: Kind = "number" if index_set.all_int else "element"
            return Node(lambda env: env[name], 0, kind, token, index_set=index_set.name)
        param = self.table.parameters.get(name)
        if param is not None:
            if param.sets:
                raise self._error(
                    f"parameter {name} is indexed by ({param.signature}); "
                    f"write {name}[{_placeholders(param.sets)}].",
                    node,
                )
            value = param.scalar
            return Node(lambda env: value, 0, "number", token, literal=value, is_literal=True)
        variable = self.table.variables.get(name)
        if variable is not None:
            if variable.sets:
                raise self._error(
                    f"variable {name} is indexed by ({variable.signature}); "
                    f"write {name}[{_placeholders(variable.sets)}].",
                    node,
                )
            get = self._getter(variable)
            return Node(lambda env: get(()), 1, "number", token, variables=frozenset([name]))
        if name in self.table.sets:
            raise self._error(
                f"{name} is a set; iterate over it (`for i in {name}`) and use the index i.", node
            )
        if name in ALLOWED_FUNCTIONS:
            raise self._error(f"{name} is a function; call it, e.g. {name}(... for i in S).", node)
        raise self._undefined(name, node, scope)

    def _require_number(self, operand: Node, node: ast.AST) -> None:
        if operand.degree == 0 and operand.kind == "element":
            raise self._error(
                f"{operand.token!r} is a set element (a name), so it cannot be used in arithmetic.", node
            )

    def _subscript(self, node: ast.Subscript, scope: dict[str, str], token: str) -> Node:
        if not isinstance(node.value, ast.Name):
            raise self._error("only parameters and variables can be indexed, e.g. cost[i, j].", node)
        name = node.value.id
        target: ParameterInfo | VariableInfo | None = self.table.parameters.get(
            name
        ) or self.table.variables.get(name)
        if target is None:
            if name in self.table.sets:
                raise self._error(f"{name} is a set; sets cannot be indexed.", node)
            raise self._undefined(name, node.value, scope)
        index_nodes = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        what = "parameter" if isinstance(target, ParameterInfo) else "variable"
        if not target.sets:
            raise self._error(f"{what} {name} is a scalar; use it without brackets.", node)
        if len(index_nodes) != len(target.sets):
            raise self._error(
                f"{what} {name} expects {len(target.sets)} ind{'ex' if len(target.sets) == 1 else 'ices'} "
                f"({target.signature}) but got {len(index_nodes)}.",
                node,
            )
        keys = [
            self._key(n, s, position, name, scope)
            for position, (n, s) in enumerate(zip(index_nodes, target.sets, strict=True), start=1)
        ]
        key_fn = _key_function(keys)
        if isinstance(target, ParameterInfo):
            return self._parameter_node(target, key_fn, token, len(keys))
        get = self._getter(target)
        return Node(lambda env: get(key_fn(env)), 1, "number", token, variables=frozenset([name]))

    def _key(
        self, node: ast.AST, declared: SetInfo, position: int, owner: str, scope: dict[str, str]
    ) -> Callable[[Env], Element]:
        """One subscript position -> a function giving the element, checked against `declared`."""
        key = self._value(node, scope)
        if key.degree > 0:
            raise self._error(f"the index of {owner} cannot contain variables.", node)
        token = key.token
        if key.index_set is not None:
            running = self.table.sets[key.index_set]
            if running.name != declared.name:
                outside = [e for e in running.elements if element_key(e) not in declared.keys]
                if outside:
                    raise self._error(
                        f"index {token} runs over {running.name}, but position {position} of {owner} is "
                        f"indexed by {declared.name}; {_listing(outside, 4)} of {running.name} "
                        f"{'is' if len(outside) == 1 else 'are'} not in {declared.name}. "
                        "Check the order of the indices or iterate over the right set.",
                        node,
                    )
                # a subset: elements may be stored with another type ("1" vs 1); normalize
                return _normalizing_key(key.fn, declared, owner, position, token)
            return key.fn
        if key.is_literal:
            element = declared.lookup(key.literal)
            if element is None:
                raise self._error(
                    f"{key.literal!r} is not an element of {declared.name} (position {position} of {owner})."
                    f"{_suggest(str(key.literal), list(declared.keys))} "
                    f"Elements: {_listing(declared.elements)}.",
                    node,
                )
            return lambda env: element
        return _normalizing_key(key.fn, declared, owner, position, token)

    def _parameter_node(
        self, param: ParameterInfo, key_fn: Callable[[Env], Any], token: str, arity: int
    ) -> Node:
        # `param.table` is read per call, not captured: it is only built if something evaluates
        default = param.default
        if default is not None:
            return Node(lambda env: param.table.get(key_fn(env), default), 0, "number", token)

        def lookup(env: Env) -> float:
            key = key_fn(env)
            try:
                return param.table[key]
            except KeyError:
                raise _missing_entry(param, key if arity > 1 else (key,), token) from None

        return Node(lookup, 0, "number", token)

    def _binop(self, node: ast.BinOp, scope: dict[str, str], token: str) -> Node:
        symbol = _op_symbol(node.op)
        if symbol not in ("+", "-", "*", "/", "**", "%", "//"):
            raise self._error(f"operator {type(node.op).__name__} is not supported; use + - * / **.", node)
        left, right = self._value(node.left, scope), self._value(node.right, scope)
        self._require_number(left, node)
        self._require_number(right, node)
        variables = left.variables | right.variables
        lf, rf = left.fn, right.fn
        if symbol in ("+", "-"):
            degree = max(left.degree, right.degree)
            fn = (lambda env: lf(env) + rf(env)) if symbol == "+" else (lambda env: lf(env) - rf(env))
            return self._checked(Node(fn, degree, "number", token, variables=variables), node)
        if symbol == "*":
            degree = min(left.degree + right.degree, NONLINEAR)
            if left.degree and right.degree and degree > self.max_degree:
                raise self._nonlinear(
                    f"{left.token} * {right.token} multiplies two expressions that contain variables", node
                )
            return Node(lambda env: lf(env) * rf(env), degree, "number", token, variables=variables)
        if symbol == "/":
            if right.degree:
                if self.kind != "nonlinear":
                    raise self._error(
                        "division by an expression containing variables "
                        f"({', '.join(sorted(right.variables))}) "
                        "is not linear; multiply both sides by the denominator instead "
                        '(only valid if it is positive), or declare kind "nonlinear".',
                        node,
                    )
                return Node(lambda env: lf(env) / rf(env), NONLINEAR, "number", token, variables=variables)
            return Node(_divide(lf, rf, right.token), left.degree, "number", token, variables=variables)
        if symbol == "**":
            return self._power(left, right, node, token)
        if left.degree or right.degree:  # % and // only make sense on data
            raise self._error(f"`{symbol}` can only be used on data (indices and parameters).", node)
        op = (lambda a, b: a % b) if symbol == "%" else (lambda a, b: a // b)
        return Node(_divide(lf, rf, right.token, op), 0, "number", token)

    def _checked(self, node: Node, ast_node: ast.AST) -> Node:
        if node.degree > self.max_degree:
            raise self._nonlinear(f"{node.token} is not {self.kind}", ast_node)
        return node

    def _power(self, base: Node, exponent: Node, node: ast.AST, token: str) -> Node:
        bf, ef = base.fn, exponent.fn
        if base.degree == 0 and exponent.degree == 0:
            return Node(lambda env: bf(env) ** ef(env), 0, "number", token)
        if (
            exponent.degree == 0
            and exponent.is_literal
            and float(exponent.literal).is_integer()
            and exponent.literal >= 0
        ):
            power = int(exponent.literal)
            if power == 0:
                return Node(lambda env: 1.0, 0, "number", token, literal=1.0, is_literal=True)
            degree = min(base.degree * power, NONLINEAR)
            if degree > self.max_degree:
                raise self._nonlinear(f"{token} raises a variable expression to the power {power}", node)
            return Node(lambda env: bf(env) ** power, degree, "number", token, variables=base.variables)
        if self.kind != "nonlinear":
            raise self._nonlinear(f"{token} is a power that is not a polynomial in the variables", node)
        return Node(
            lambda env: bf(env) ** ef(env),
            NONLINEAR,
            "number",
            token,
            variables=base.variables | exponent.variables,
        )

    def _nonlinear(self, what: str, node: ast.AST) -> ExpressionError:
        if self.kind == "linear":
            advice = (
                'The formulation\'s kind is "linear": linearize it (e.g. a binary variable with big-M '
                'constraints), or declare kind "quadratic" if it is a quadratic objective term.'
            )
        elif self.kind == "quadratic":
            advice = 'The formulation\'s kind is "quadratic", which allows degree 2 at most.'
        else:
            advice = ""
        return self._error(f"{what}. {advice}".strip(), node)

    def _call(self, node: ast.Call, scope: dict[str, str], token: str) -> Node:
        if not isinstance(node.func, ast.Name):
            hint = _SYNTAX_HINTS.get(type(node.func), "only sum, abs, min and max can be called")
            raise self._error(hint + ".", node)
        if node.func.id not in ALLOWED_FUNCTIONS:
            called = node.func.id
            raise self._error(
                f"function {called} is not available; "
                "allowed: sum(... for i in S), and abs, min, max of data.",
                node,
            )
        function = node.func.id
        if node.keywords:
            raise self._error(f"{function}() takes no keyword arguments here.", node)
        if function == "sum":
            if len(node.args) != 1 or not isinstance(node.args[0], ast.GeneratorExp):
                raise self._error(
                    "write sums as sum(expression for i in Set [for j in Set2] [if condition]).", node
                )
            return self._sum(node.args[0], scope, token)
        if function == "abs":
            if len(node.args) != 1:
                raise self._error("abs takes one argument.", node)
            inner = self._value(node.args[0], scope)
            self._require_number(inner, node)
            if inner.degree and self.kind != "nonlinear":
                raise self._error(
                    "abs() of an expression with variables is not linear; introduce t >= e and t >= -e "
                    "and use t (exact when t is minimized).",
                    node,
                )
            f = inner.fn
            return Node(
                lambda env: abs(f(env)),
                NONLINEAR if inner.degree else 0,
                "number",
                token,
                variables=inner.variables,
            )
        return self._extremum(node, function, scope, token)

    def _extremum(self, node: ast.Call, function: str, scope: dict[str, str], token: str) -> Node:
        pick = min if function == "min" else max
        if len(node.args) == 1 and isinstance(node.args[0], ast.GeneratorExp):
            loop = self._generator(node.args[0], scope)
            if loop.body.degree:
                raise self._error(f"{function}() of variables is not linear; use it on data only.", node)
            body_fn, label = loop.body.fn, self._segment(node)

            def extremum(env: Env) -> float:
                values = [body_fn(env) for _ in loop.bind(env)]
                if not values:
                    raise _Fail(f"{function}() over an empty selection.", label)
                return pick(values)

            return Node(extremum, 0, "number", token)
        if len(node.args) < 2:
            raise self._error(f"{function}() takes two or more numbers, or a generator.", node)
        args = [self._value(a, scope) for a in node.args]
        for arg in args:
            self._require_number(arg, node)
            if arg.degree:
                raise self._error(
                    f"{function}() of variables is not linear; model it with an auxiliary variable "
                    f"(t >= each argument for max, t <= each for min).",
                    node,
                )
        fns = [a.fn for a in args]
        return Node(lambda env: pick(f(env) for f in fns), 0, "number", token)

    def _sum(self, node: ast.GeneratorExp, scope: dict[str, str], token: str) -> Node:
        loop = self._generator(node, scope)
        body = loop.body
        body_fn, bind = body.fn, loop.bind
        if body.degree == 0:
            if body.kind == "element":
                raise self._error(f"cannot sum set elements ({body.token}).", node)
            return Node(lambda env: math.fsum(body_fn(env) for _ in bind(env)), 0, "number", token)
        total = self.algebra.total
        return Node(
            lambda env: total([body_fn(env) for _ in bind(env)]),
            body.degree,
            "number",
            token,
            variables=body.variables,
        )

    def _generator(self, node: ast.GeneratorExp, scope: dict[str, str]) -> _Loop:
        inner = dict(scope)
        levels: list[tuple[str, list[Element], list[Callable[[Env], Any]]]] = []
        for comp in node.generators:
            if comp.is_async:
                raise self._error("async comprehensions are not supported.", comp)
            if not isinstance(comp.target, ast.Name):
                raise self._error(
                    "bind one index per `for`: write `for i in A for j in B`, not tuples.", comp.target
                )
            index = comp.target.id
            self._check_new_index(index, comp.target, inner)
            if not isinstance(comp.iter, ast.Name) or comp.iter.id not in self.table.sets:
                iterated = self._segment(comp.iter)
                hint = _suggest(iterated, list(self.table.sets)) if isinstance(comp.iter, ast.Name) else ""
                raise self._error(
                    f"`for {index} in {iterated}`: iterate over a declared set.{hint} "
                    f"Sets: {_listing(list(self.table.sets))}.",
                    comp.iter,
                )
            inner[index] = comp.iter.id
            conditions = [self._condition(c, inner).fn for c in comp.ifs]
            levels.append((index, self.table.sets[comp.iter.id].elements, conditions))
        body = self._value(node.elt, inner)
        return _Loop(body, levels)

    def _check_new_index(self, index: str, node: ast.AST, scope: dict[str, str]) -> None:
        if index in scope:
            raise self._error(f"index {index} is already bound here; use a different name.", node)
        if index in self.table.parameters or index in self.table.variables or index in self.table.sets:
            raise self._error(
                f"index name {index} is also the name of a set, parameter or variable; rename the index.",
                node,
            )

    # -- conditions -------------------------------------------------------------------------
    def _condition(self, node: ast.AST, scope: dict[str, str]) -> Node:
        token = self._segment(node)
        if isinstance(node, ast.BoolOp):
            parts = [self._condition(v, scope).fn for v in node.values]
            if isinstance(node.op, ast.And):
                return Node(lambda env: all(p(env) for p in parts), 0, "bool", token)
            return Node(lambda env: any(p(env) for p in parts), 0, "bool", token)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self._condition(node.operand, scope).fn
            return Node(lambda env: not inner(env), 0, "bool", token)
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            value = node.value
            return Node(lambda env: value, 0, "bool", token)
        if isinstance(node, ast.Compare):
            return self._comparison(node, scope, token)
        raise self._error(
            "a filter must be a comparison such as `i != j`, `t > 1`, `cost[i, j] > 0`, `i in S`, "
            "combined with and/or/not.",
            node,
        )

    def _comparison(self, node: ast.Compare, scope: dict[str, str], token: str) -> Node:
        operands: list[Callable[[Env], Any]] = []
        left = self._data(node.left, scope)
        checks: list[Callable[[Any, Any], bool]] = []
        membership: list[SetInfo | None] = []
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            symbol = _COMPARE_SYMBOL.get(type(op))
            if symbol in ("in", "not in"):
                if not isinstance(comparator, ast.Name) or comparator.id not in self.table.sets:
                    raise self._error(
                        f"`{symbol}` needs a set name on its right, e.g. `i in Hubs`.", comparator
                    )
                members = self.table.sets[comparator.id]
                membership.append(members)
                operands.append(lambda env: None)
                negate = symbol == "not in"
                checks.append(lambda a, _b, m=members, n=negate: (element_key(a) in m.keys) != n)
                continue
            membership.append(None)
            operands.append(self._data(comparator, scope).fn)
            checks.append(_COMPARATORS[symbol or ""])
        first = left.fn

        def compare(env: Env) -> bool:
            a = first(env)
            for operand, check in zip(operands, checks, strict=True):
                b = operand(env)
                try:
                    if not check(a, b):
                        return False
                except TypeError:
                    raise _Fail(
                        f"cannot compare {a!r} with {b!r}: an element name with a number.", token
                    ) from None
                a = b
            return True

        return Node(compare, 0, "bool", token)

    def _data(self, node: ast.AST, scope: dict[str, str]) -> Node:
        value = self._value(node, scope)
        if value.degree:
            raise self._error(
                "filters can only use indices and parameters, not variables "
                f"({', '.join(sorted(value.variables))}).",
                node,
            )
        return value


# == and != compare like elements are matched (2.0 equals 2, "1" equals 1); orderings are numeric.
_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": lambda a, b: element_key(a) == element_key(b),
    "!=": lambda a, b: element_key(a) != element_key(b),
}


@dataclass
class _Loop:
    """The `for ... in ... if ...` part of a generator, as an iterator over bindings."""

    body: Node
    levels: list[tuple[str, list[Element], list[Callable[[Env], Any]]]]

    def bind(self, env: Env) -> Iterator[None]:
        """Yield once per binding, with the indices set in `env` (and removed afterwards)."""
        names = [name for name, _, _ in self.levels]
        try:
            yield from self._level(env, 0)
        finally:
            for name in names:
                env.pop(name, None)

    def _level(self, env: Env, depth: int) -> Iterator[None]:
        name, elements, conditions = self.levels[depth]
        last = depth == len(self.levels) - 1
        for element in elements:
            env[name] = element
            if conditions and not all(c(env) for c in conditions):
                continue
            if last:
                yield None
            else:
                yield from self._level(env, depth + 1)


def _placeholders(sets: list[SetInfo]) -> str:
    letters = "ijklmnpqrs"
    return ", ".join(letters[k] if k < len(letters) else f"i{k}" for k in range(len(sets)))


def _key_function(keys: list[Callable[[Env], Element]]) -> Callable[[Env], Any]:
    """Subscript -> the dictionary key used by tables and variables (element or tuple)."""
    if len(keys) == 1:
        return keys[0]
    if len(keys) == 2:
        a, b = keys
        return lambda env: (a(env), b(env))
    return lambda env: tuple(k(env) for k in keys)


def _normalizing_key(
    fn: Callable[[Env], Any], declared: SetInfo, owner: str, position: int, token: str
) -> Callable[[Env], Element]:
    lookup = declared.keys.get

    def key(env: Env) -> Element:
        value = fn(env)
        element = lookup(element_key(value))
        if element is None:
            raise _Fail(
                f"`{token}` is {value!r} here, which is not an element of {declared.name} "
                f"(position {position} of {owner}); restrict the instances with `where` or an `if`.",
                token,
            )
        return element

    return key


def _divide(
    lf: Callable[[Env], Any],
    rf: Callable[[Env], Any],
    token: str,
    op: Callable[[Any, Any], Any] | None = None,
) -> Callable[[Env], Any]:
    def divide(env: Env) -> Any:
        denominator = rf(env)
        if denominator == 0:
            raise _Fail(f"division by zero: `{token}` is 0 here.", token)
        return op(lf(env), denominator) if op else lf(env) / denominator

    return divide


# --- formulation-level compilation, shared by the model builder and the checker --------------
@dataclass
class CompiledConstraint:
    constraint: Constraint
    index_sets: list[SetInfo]
    relation: Relation
    where: Node | None

    @property
    def name(self) -> str:
        return self.constraint.name

    def instances(self) -> Iterator[tuple[tuple[Element, ...], Env]]:
        """(key, env) for every repetition that passes `where`. The env is reused: copy to keep.

        Raises `ExpressionError` when `where` cannot be evaluated for some key; use
        `checked_instances` to get those problems per instance instead.
        """
        for key, env, problem in self.checked_instances():
            if problem is not None:
                raise problem
            yield key, env

    def checked_instances(self) -> Iterator[tuple[tuple[Element, ...], Env, ExpressionError | None]]:
        """(key, env, problem) for every repetition that passes `where`; `problem` is set when
        `where` itself cannot be evaluated for that key. The env is reused: copy to keep."""
        names = [b.index for b in self.constraint.for_all]
        env: Env = {}
        where = self.where
        for key in itertools.product(*(s.elements for s in self.index_sets)):
            env.update(zip(names, key, strict=True))
            if where is None:
                yield key, env, None
                continue
            try:
                passes = evaluate(where, env, f"constraint {instance_name(self.name, key)} (where)")
            except ExpressionError as problem:
                yield key, env, problem
                continue
            if passes:
                yield key, env, None


@dataclass
class CompiledFormulation(Generic[T]):
    formulation: Formulation
    table: SymbolTable
    objective: Node | None
    constraints: list[CompiledConstraint]
    errors: list[ExpressionError]


def compile_formulation(
    f: Formulation, algebra: Algebra[T], table: SymbolTable | None = None
) -> CompiledFormulation[T]:
    """Resolve names and compile the objective and every constraint; collect ALL static errors."""
    table = table or SymbolTable.from_formulation(f)
    errors = list(table.errors)
    compiler: Compiler[T] = Compiler(table, algebra, f.kind)
    objective: Node | None = None
    try:
        objective = compiler.expression(f.objective.expression, {}, "objective")
    except ExpressionError as error:
        errors.append(error)
    constraints: list[CompiledConstraint] = []
    for c in f.constraints:
        component = f"constraint {c.name}"
        try:
            scope, sets = _bindings(c, table, compiler)
            where = compiler.condition(c.where, scope, component) if c.where and c.where.strip() else None
            relation = compiler.relation(c.expression, scope, component)
        except ExpressionError as error:
            errors.append(error)
            continue
        constraints.append(CompiledConstraint(c, sets, relation, where))
    return CompiledFormulation(f, table, objective, constraints, errors)


def _bindings(
    c: Constraint, table: SymbolTable, compiler: Compiler[Any]
) -> tuple[dict[str, str], list[SetInfo]]:
    component = f"constraint {c.name}"
    scope: dict[str, str] = {}
    sets: list[SetInfo] = []
    for binding in c.for_all:
        if binding.index in scope:
            raise ExpressionError(
                f"index {binding.index} is bound twice in for_all; use distinct names (e.g. i and j).",
                component=component,
                token=binding.index,
            )
        if (
            binding.index in table.parameters
            or binding.index in table.variables
            or binding.index in table.sets
        ):
            raise ExpressionError(
                f"index name {binding.index} is also the name of a set, parameter or variable; "
                "rename the index.",
                component=component,
                token=binding.index,
            )
        found = table.sets.get(binding.set)
        if found is None:
            raise ExpressionError(
                f"for_all iterates over {binding.set!r}, which is not a declared set."
                f"{_suggest(binding.set, list(table.sets))} Sets: {_listing(list(table.sets))}.",
                component=component,
                token=binding.set,
            )
        scope[binding.index] = binding.set
        sets.append(found)
    return scope, sets


def evaluate(node: Node | Relation, env: Env, component: str) -> Any:
    """Evaluate a compiled node for one instance; runtime problems become `ExpressionError`s."""
    try:
        return node.evaluate(env) if isinstance(node, Relation) else node.fn(env)
    except _Fail as fail:
        raise ExpressionError(fail.message, component=component, token=fail.token) from None
    except ArithmeticError as error:  # e.g. 10.0 ** 400 overflows
        raise ExpressionError(
            f"arithmetic error ({error}); check the data this instance uses.",
            component=component,
            token=node.token,
        ) from None
