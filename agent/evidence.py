"""Evidence -> feedback text: what went wrong with a formulation, phrased so a small model can fix it.

The same text serves two readers: the repair prompt (the agent fixes this problem now) and trace
feedback (an optimizer improves the prompts for all problems later). So it names the failing
components and says which kind of mistake usually causes that failure.
"""

from __future__ import annotations

from solvers.result import CheckReport, InfeasibilityDiagnosis, SolveResult, SolveStatus

MAX_LISTED = 12


def _bullets(lines: list[str]) -> str:
    shown = lines[:MAX_LISTED]
    more = [f"- ... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else []
    return "\n".join([f"- {line}" for line in shown] + more)


def unreadable_reply(problem: str) -> str:
    return (
        f"The reply could not be read as a model: {problem}\n"
        "Reply with one complete JSON object in the requested format, nothing else."
    )


def invalid_model(problems: list[str]) -> str:
    return "The model is not valid:\n" + _bullets(problems)


def build_failed(problems: list[str], declared: list[str]) -> str:
    text = "Building the model failed:\n" + _bullets(problems)
    if declared:
        text += "\nNames that exist: " + ", ".join(declared) + ". Use only these, spelled exactly."
    return text


def program_failed(status: str, error: str) -> str:
    hints = {
        "syntax_error": "Fix the Python syntax.",
        "contract_error": "Define build_model() returning a pyo.ConcreteModel; do not solve it.",
        "runtime_error": "Fix the line the traceback points at.",
        "timeout": "build_model() must only build the model; remove loops or waiting.",
    }
    tail = error.strip()
    if len(tail) > 1500:  # the end of a traceback says the most
        tail = "..." + tail[-1500:]
    return f"The program failed ({status.replace('_', ' ')}):\n{tail}\n{hints.get(status, '')}".rstrip()


def _diagnosis_text(diagnosis: InfeasibilityDiagnosis) -> str:
    if diagnosis.message.strip():  # the diagnosis already names the conflict and the cheapest fix
        return diagnosis.message.strip()
    lines = []
    if diagnosis.conflict:
        members = [
            f"{m.name}{' (' + m.description + ')' if m.description else ''}"
            + (" [variable bound]" if m.kind == "variable_bound" else "")
            for m in diagnosis.conflict
        ]
        lines.append("These cannot all hold together:\n" + _bullets(members))
    fixes = [
        f"{r.name}: {r.direction.replace('_', ' ')} by {r.amount:g}"
        for r in diagnosis.relaxations
        if r.amount
    ]
    if fixes:
        lines.append("Smallest change that would make it feasible:\n" + _bullets(fixes))
    return "\n".join(lines)


def solve_failed(solve: SolveResult, unconstrained: list[str] | None = None) -> str:
    if solve.status == SolveStatus.INFEASIBLE:
        text = "The model is infeasible: no plan satisfies every constraint."
        if solve.diagnosis is not None:
            text += "\n" + _diagnosis_text(solve.diagnosis)
        return (
            text + "\nCheck each listed constraint against the problem text: the direction (<= for a "
            "capacity or limit, >= for a requirement) and the numbers."
        )
    if solve.status in (SolveStatus.UNBOUNDED, SolveStatus.INFEASIBLE_OR_UNBOUNDED):
        if unconstrained:
            names = ", ".join(unconstrained)
            return (
                f"The model is unbounded: {names} appear(s) in no constraint, so nothing limits them. "
                f"Every resource constraint must include the use of that resource by every decision, "
                f"{names} too (read the notes: which resources does each of them use?)."
            )
        return (
            f"The model is {solve.status.value.replace('_', ' ')}: the objective can improve without limit. "
            "A limit from the problem (a resource capacity, a budget, a demand) is missing, or written "
            "with >= where it needs <=, or the objective sense is wrong."
        )
    return f"The solver failed ({solve.status.value}): {solve.message or 'no details'}"


def verification_failed(check: CheckReport) -> str:
    return (
        "An independent check of the solver's plan against the model found problems:\n"
        + check.summary()
        + "\nRewrite the affected constraints or bounds so they state exactly what the problem says."
    )


def sanity_rejected(concerns: list[str]) -> str:
    return (
        "The model solves, but the answer looks wrong for this problem:\n"
        + _bullets(concerns)
        + "\nRe-read the problem and correct the model."
    )
