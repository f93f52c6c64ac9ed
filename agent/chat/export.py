"""Export a formulation: a standalone Pyomo script generated from the IR, or an LP file.

The script needs only Pyomo and HiGHS (`python model.py` builds, solves and prints the result),
so a model can leave OptiTrace. Expressions are rewritten on their syntax tree, never by text
substitution: variables become model components (`x[i]` -> `m.x[i]`), ranges become
`pyo.inequality`, and element literals take the type their set declares. Data is written as
Python literals; nothing is pickled.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path
from typing import Any

from solvers.build import build_model
from solvers.ir import Constraint, Formulation
from solvers.symbols import SymbolTable

_DOMAINS = {"continuous": "pyo.Reals", "integer": "pyo.Integers", "binary": "pyo.Binary"}


class ExportError(ValueError):
    """The model cannot be exported (it does not build, or the file type is unknown)."""


def _free_name(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    return name


def _names_in(f: Formulation) -> set[str]:
    """Every identifier the formulation uses, so the script's own names avoid them."""
    names = {s.name for s in f.sets} | {p.name for p in f.parameters} | {v.name for v in f.variables}
    names |= {c.name for c in f.constraints} | {f.objective.name}
    texts = (
        [f.objective.expression]
        + [c.expression for c in f.constraints]
        + [c.where or "" for c in f.constraints]
    )
    for text in texts:
        names |= set(re.findall(r"[A-Za-z_]\w*", text))
    for c in f.constraints:
        names |= {b.index for b in c.for_all}
    return names


class _Rewriter(ast.NodeTransformer):
    """IR expression -> Python expression over the generated script's names."""

    def __init__(self, f: Formulation, table: SymbolTable, model: str, pyo: str) -> None:
        self.variables = {v.name: v for v in f.variables}
        self.table = table
        self.model = model
        self.pyo = pyo

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.variables:
            return ast.copy_location(
                ast.Attribute(ast.Name(self.model, ast.Load()), node.id, ast.Load()), node
            )
        return node

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        owner = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", None)
        sets = []
        if owner in self.table.variables:
            sets = self.table.variables[owner].sets
        elif owner in self.table.parameters:
            sets = self.table.parameters[owner].sets
        positions = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        for position, declared in zip(positions, sets, strict=False):
            # "1" written for an integer set (or 1 for "1") names the declared element
            if isinstance(position, ast.Constant) and isinstance(position.value, str | int):
                element = declared.lookup(position.value)
                if element is not None:
                    position.value = element
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if len(node.ops) != 2:
            return node
        # Python would evaluate `lo <= e <= hi` as `(lo <= e) and (e <= hi)`: Pyomo needs inequality()
        low, body, high = node.left, node.comparators[0], node.comparators[1]
        if isinstance(node.ops[0], ast.GtE):
            low, high = high, low
        call = ast.Call(
            ast.Attribute(ast.Name(self.pyo, ast.Load()), "inequality", ast.Load()), [low, body, high], []
        )
        return ast.copy_location(call, node)


def _python(expression: str, rewriter: _Rewriter) -> str:
    tree = ast.parse(expression.strip(), mode="eval")
    return ast.unparse(ast.fix_missing_locations(rewriter.visit(tree)).body)


def _literal(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return repr(float(value))
    return repr(value)


def _parameter_code(name: str, table: SymbolTable, default_class: str) -> str:
    info = table.parameters[name]
    if not info.sets:
        return f"{name} = {_literal(info.scalar)}"
    entries = ",\n".join(f"    {key!r}: {_literal(value)}" for key, value in info.table.items())
    body = f"{{\n{entries},\n}}" if entries else "{}"
    if info.default is not None:
        return f"{name} = {default_class}({_literal(info.default)}, {body})"
    return f"{name} = {body}"


def _constraint_code(c: Constraint, rewriter: _Rewriter, model: str, pyo: str) -> list[str]:
    expression = _python(c.expression, rewriter)
    doc = f", doc={c.description!r}" if c.description else ""
    if not c.for_all:
        return [f"{model}.{c.name} = {pyo}.Constraint(rule=lambda {model}: _relation({expression}){doc})"]
    indices = ", ".join(b.index for b in c.for_all)
    sets = ", ".join(f"{model}.{b.set}" for b in c.for_all)
    lines = [f"def _{c.name}_rule({model}, {indices}):"]
    if c.where and c.where.strip():
        lines.append(f"    if not ({_python(c.where, rewriter)}):")
        lines.append(f"        return {pyo}.Constraint.Skip")
    lines.append(f"    return _relation({expression})")
    lines.append(f"{model}.{c.name} = {pyo}.Constraint({sets}, rule=_{c.name}_rule{doc})")
    return lines


def pyomo_script(f: Formulation, title: str = "") -> str:
    """A standalone, runnable Pyomo program for `f`. Raises ExportError when `f` does not build."""
    try:
        build_model(f)  # the same checks as solving: an export of a broken model helps nobody
    except ValueError as error:
        raise ExportError(f"the model does not build, so it cannot be exported: {error}") from error
    table = SymbolTable.from_formulation(f)
    taken = _names_in(f)
    pyo = _free_name("pyo", taken)
    model = _free_name("m", taken | {pyo})
    default_class = _free_name("WithDefault", taken)
    rewriter = _Rewriter(f, table, model, pyo)
    described = textwrap.indent(textwrap.fill(" ".join(title.split()), 96), "# ") if title.strip() else ""
    out: list[str] = [
        '"""An optimization model generated by OptiTrace from its formulation. Run: python <this file>"""',
        "",
        f"# Model: {' '.join(f.name.split())}",
    ]
    if described:
        out += ["# Problem:", described]
    out.append("")
    out += [f"import pyomo.environ as {pyo}", "", ""]
    if any(table.parameters[p.name].default is not None for p in f.parameters if p.name in table.parameters):
        out += [
            f"class {default_class}(dict):",
            '    """A parameter table whose missing entries take a default."""',
            "",
            "    def __init__(self, default, entries):",
            "        super().__init__(entries)",
            "        self.default = default",
            "",
            "    def __missing__(self, key):",
            "        return self.default",
            "",
            "",
        ]
    if f.sets:
        out.append("# index sets")
        out += [f"{s.name} = {list(table.sets[s.name].elements)!r}" for s in f.sets]
        out.append("")
    if f.parameters:
        out.append("# data")
        out += [_parameter_code(p.name, table, default_class) for p in f.parameters]
        out.append("")
    out += [
        "",
        "def _relation(expression):",
        '    """A comparison without variables is already True or False; Pyomo wants to be told which."""',
        "    if expression is True:",
        f"        return {pyo}.Constraint.Feasible",
        "    if expression is False:",
        f"        return {pyo}.Constraint.Infeasible",
        "    return expression",
        "",
        "",
        "def build_model():",
        f"    {model} = {pyo}.ConcreteModel(name={f.name!r})",
    ]
    body: list[str] = []
    for s in f.sets:
        body.append(f"{model}.{s.name} = {pyo}.Set(initialize={s.name}, ordered=True)")
    for v in f.variables:
        index = "".join(f"{model}.{name}, " for name in v.index)
        doc = f", doc={v.description!r}" if v.description else ""
        body.append(
            f"{model}.{v.name} = {pyo}.Var({index}domain={_DOMAINS[v.domain]}, "
            f"bounds=({v.lower!r}, {v.upper!r}){doc})"
        )
    sense = f"{pyo}.maximize" if f.objective.sense == "maximize" else f"{pyo}.minimize"
    body.append(
        f"{model}.{f.objective.name} = {pyo}.Objective(expr={_python(f.objective.expression, rewriter)}, "
        f"sense={sense})"
    )
    for c in f.constraints:
        body += _constraint_code(c, rewriter, model, pyo)
    body.append(f"return {model}")
    out += [f"    {line}" if line else "" for line in body]
    out += [
        "",
        "",
        "def main():",
        f"    {model} = build_model()",
        f"    solver = {pyo}.SolverFactory('highs')",
        "    if not solver.available(exception_flag=False):",
        f"        solver = {pyo}.SolverFactory('appsi_highs')",
        f"    result = solver.solve({model}, load_solutions=False)",
        "    condition = str(result.solver.termination_condition)",
        "    print(f'status: {condition}')",
        "    if condition != 'optimal':",
        "        raise SystemExit(1)",
        f"    {model}.solutions.load_from(result)",
        f"    print(f'objective: {{{pyo}.value({model}.{f.objective.name}):.10g}}')",
        f"    for var in {model}.component_data_objects({pyo}.Var):",
        "        value = 'unused' if var.value is None else f'{var.value + 0.0:.10g}'  # no -0",
        "        print(f'{var.name} = {value}')",
        "",
        "",
        'if __name__ == "__main__":',
        "    main()",
        "",
    ]
    return "\n".join(out)


def write_lp(f: Formulation, path: Path) -> None:
    """The model in CPLEX LP format, written by Pyomo with the IR's names as labels."""
    try:
        built = build_model(f)
    except ValueError as error:
        raise ExportError(f"the model does not build, so it cannot be exported: {error}") from error
    built.model.write(str(path), format="lp", io_options={"symbolic_solver_labels": True})


def export_model(f: Formulation, path: Path, title: str = "") -> Path:
    """Write `f` to `path`: `.py` -> Pyomo script, `.lp` -> LP file."""
    suffix = path.suffix.lower()
    if suffix == ".py":
        path.write_text(pyomo_script(f, title), encoding="utf-8")
    elif suffix == ".lp":
        write_lp(f, path)
    else:
        raise ExportError(f"cannot export to {path.name}: use a .py (Pyomo script) or .lp (LP file) name")
    return path
