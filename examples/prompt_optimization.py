"""Optimizing a prompt on a tiny dataset with the Trainer and OptoPrime.

The workflow is a small "temperature bot": a Module whose trainable parameter is the system prompt
of an LLM call that converts Celsius to Fahrenheit. The grader wants the exact text of the answer
("59.4"), and the starting prompt says nothing about the format, so the bot is wordy and gives
more decimals than asked for ("Sure! 15.2 °C is 59.36 °F."). The Trainer runs minibatches in two threads,
sends each answer's feedback back, lets OptoPrime rewrite the prompt, validates on held-out
questions, keeps the best prompt and reverts any step that makes validation worse.

By default a ScriptedLLMServer on 127.0.0.1 stands in for the LLM in both of its roles, and
neither role is given the answer:
* as the bot it behaves like a literal-minded small model: it does the arithmetic, then formats
  the number only as far as the system prompt asks ("only the number", "round to N decimal
  places") and is chatty otherwise;
* as the optimizer its responder reads the current prompt from #Variables and the
  expected/got pairs from #Feedback, diagnoses the difference (extra words around the number; more
  decimals than the expected answers have) and appends one instruction fixing it.
With --real the same prompts go to the endpoint configured by OPENAI_BASE_URL (or the optitrace
config file), else to the embedded local model (started on demand), for both roles.

    python examples/prompt_optimization.py [--real] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trace_graph import Module, Node, bundle, node
from trace_graph.llm import ChatRequest, LLMClient, ScriptedLLMServer
from trace_graph.optimizers import SECTION_TITLES, OptoPrime, split_sections
from trace_graph.trainer import EvalOutcome, Example, Trainer

NUMBER = r"-?\d+(?:\.\d+)?"
CELSIUS = [37.0, 15.2, 100.0, 36.6, -40.0, 21.5, 18.3, 0.0, -5.2, 12.1, 60.0]  # 6 to train, 5 to validate


def dataset() -> list[tuple[str, str]]:
    return [(f"Convert {c:g} °C to Fahrenheit.", f"{c * 9 / 5 + 32:.1f}") for c in CELSIUS]


class TemperatureBot(Module):
    def __init__(self, llm: LLMClient) -> None:
        self.llm = llm
        self.instructions = node(
            "You convert temperatures between Celsius and Fahrenheit.",
            trainable=True,
            description="the system prompt of the temperature bot",
        )

    @bundle
    def answer(self, question: str) -> str:
        """Ask the LLM the question, with the instructions as the system prompt."""
        messages = [
            {"role": "system", "content": self.instructions.value},
            {"role": "user", "content": question},
        ]
        return self.llm.chat(messages, temperature=0.0).text.strip()


def grade(question: str, output: Node, example: Example) -> EvalOutcome:
    got = str(output.value)
    if got == example.target:
        return EvalOutcome(score=1.0, feedback=f"Correct: {got!r}.")
    return EvalOutcome(
        score=0.0,
        feedback=f"Expected exactly {example.target!r}, got {got!r}. The grader compares the whole reply.",
    )


# -- the stand-ins for the LLM -----------------------------------------------------------------------


def literal_bot(system: str, question: str) -> str:
    """A model that does the arithmetic right and follows only the formatting it is told."""
    celsius = float(re.search(NUMBER, question).group())  # type: ignore[union-attr]
    fahrenheit = celsius * 9 / 5 + 32
    rounding = re.search(r"round\w* to (\d+) decimal", system, re.IGNORECASE)
    number = f"{fahrenheit:.{int(rounding.group(1))}f}" if rounding else repr(fahrenheit)
    if re.search(r"only the number", system, re.IGNORECASE):
        return number
    return f"Sure! {celsius:g} °C is {number} °F."


def prompt_editor(problem: str) -> str:
    """Read the prompt and the graded answers from the problem; append one fixing instruction."""
    sections = split_sections(problem, SECTION_TITLES)
    variable = re.search(r"^\(str\) (\S+)=(.*)$", sections.get("Variables", ""), re.MULTILINE)
    pairs = re.findall(r"Expected exactly '([^']*)', got '([^']*)'", sections.get("Feedback", ""))
    if variable is None or not pairs:
        return json.dumps(
            {"reasoning": "Every answer in this batch is correct; keep the prompt.", "suggestion": {}}
        )
    name, prompt = variable.groups()
    wordy = [got for _, got in pairs if re.sub(NUMBER, "", got).strip()]
    if wordy:
        reasoning = f"Answers like {wordy[0]!r} wrap the number in words; the grader wants the number alone."
        addition = "Reply with only the number, no words or units."
    else:
        decimals = max(len(expected.partition(".")[2]) for expected, _ in pairs)
        reasoning = f"Answers like {pairs[0][1]!r} have more decimals than the expected {pairs[0][0]!r}."
        addition = f"Round to {decimals} decimal place{'s' if decimals != 1 else ''}."
    if addition in prompt:
        return json.dumps({"reasoning": reasoning + " The prompt already says so.", "suggestion": {}})
    return json.dumps({"reasoning": reasoning, "suggestion": {name: f"{prompt} {addition}"}})


def stand_in(request: ChatRequest) -> str:
    if "#Variables" in request.last_user_text:  # the optimizer's problem
        return prompt_editor(request.last_user_text)
    return literal_bot(request.messages[0].text, request.last_user_text)


# -- training ----------------------------------------------------------------------------------------


def real_client() -> LLMClient:
    """The configured endpoint (OPENAI_BASE_URL or the config file), else the embedded local model."""
    from agent.local_llm.endpoint import resolve_llm_config  # only --real needs the agent package

    return LLMClient(resolve_llm_config())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", action="store_true", help="use the configured OpenAI-compatible endpoint")
    parser.add_argument("--out", type=Path, default=None, help="where to write the curve, CSV and checkpoint")
    arguments = parser.parse_args()
    console = Console()
    out = arguments.out or Path(tempfile.mkdtemp(prefix="prompt_optimization_"))
    out.mkdir(parents=True, exist_ok=True)
    examples = dataset()
    train, validation = examples[:6], examples[6:]

    server = None if arguments.real else ScriptedLLMServer(responder=stand_in).start()
    try:
        client = real_client() if server is None else LLMClient(server.llm_config(), cache=False)
        bot = TemperatureBot(client)
        trainer = Trainer(
            bot.answer,
            grade,
            OptoPrime(bot, client, objective="Answer every question exactly as the grader expects."),
            batch_size=3,
            epochs=2,
            val_set=validation,
            threads=2,
            seed=1,
        )
        history = trainer.fit(train, checkpoint=out / "checkpoint.json")
        final = trainer.score(validation)  # the parameters fit() ends with: the best ones
        client.close()
    finally:
        if server is not None:
            server.stop()

    table = Table("step", "status", "train", "validation", "LLM calls", "changed", title="Training history")
    for record in history.records:
        table.add_row(
            str(record.step),
            record.status,
            "" if record.train_score is None else f"{record.train_score:.2f}",
            "" if record.val_score is None else f"{record.val_score:.2f}",
            str(record.usage.calls),
            ", ".join(record.changed),
        )
    console.print(table)
    console.print(f"final prompt: {bot.instructions.value!r}")
    history.to_csv(out / "history.csv")
    console.print(
        f"learning curve: {history.plot(out / 'learning_curve.png')}; history and checkpoint in {out}"
    )
    console.print(f"validation score: {history.records[0].val_score:.2f} -> {final:.2f}")
    if final == 1.0:
        console.print("[green]every validation answer is now exactly right")
        return 0
    console.print("[red]the prompt did not reach a perfect validation score")
    return 1


if __name__ == "__main__":
    sys.exit(main())
