"""How fast is the embedded model on this machine? Prints one JSON object.

Measures: assembling the GGUF from the chunk packages (into a throw-away cache dir, so the real one is
untouched), server start (to the first /v1/models answer), generation tokens/s for a ~200-token
completion per thread count, and seconds per bakery formulation answered as schema-constrained JSON.
Thread counts above the free cores are skipped unless --force: 2 threads on a busy 2-core machine
measure the contention, not the model. Needs the [local] extra.

    python benchmarks/local_llm_speed.py [--threads 1,2] [--skip-assembly] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import OpenAI

from agent.local_llm import registry
from agent.local_llm.server import LocalServer, choose_threads

BAKERY = (
    "A bakery makes bread and cake. Bread earns $3 profit, cake $5. Each bread needs 1 hour of oven time "
    "and each cake 2 hours; 40 oven hours are available. At most 15 cakes can be sold. How many of each "
    "maximizes profit?"
)
# Notes first: the measured prompt shape that lets the 1.5B model get small LPs right (see LLM.md).
FORMULATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "notes": {"type": "string"},
        "variables": {"type": "array", "items": {"type": "string"}},
        "objective_sense": {"type": "string", "enum": ["maximize", "minimize"]},
        "objective": {"type": "string"},
        "constraints": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["notes", "variables", "objective_sense", "objective", "constraints"],
}
SYSTEM = (
    "Formulate the problem as a linear program. In `notes`, briefly list each resource's use per unit of "
    "each product. Constraints are strings like `x + 2*y <= 40`. Reply with JSON only."
)


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_assembly(model: registry.LocalModel) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="optitrace-bench-") as scratch:
        previous = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = scratch
        try:
            began = time.perf_counter()
            registry.ensure_weights(model.name, progress=False)
            seconds = time.perf_counter() - began
            began = time.perf_counter()
            registry.ensure_weights(model.name, progress=False)  # verified via the sidecar
            reuse_seconds = time.perf_counter() - began
        finally:
            if previous is None:
                os.environ.pop("XDG_CACHE_HOME")
            else:
                os.environ["XDG_CACHE_HOME"] = previous
    return {"assembly_s": round(seconds, 2), "reuse_verified_s": round(reuse_seconds, 4)}


def generation_speed(client: OpenAI, model: str) -> dict[str, Any]:
    """Streamed ~200-token completion: time to first token, then chunks (= tokens) per second."""
    began = time.perf_counter()
    first: float | None = None
    chunks = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Explain in about 200 words how the simplex method works."}],
        temperature=0.0,
        max_tokens=200,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            if first is None:
                first = time.perf_counter()
    ended = time.perf_counter()
    assert first is not None, "no tokens streamed"
    return {
        "completion_tokens": chunks,
        "first_token_s": round(first - began, 2),
        "tokens_per_s": round((chunks - 1) / (ended - first), 2) if chunks > 1 else None,
        "total_s": round(ended - began, 2),
    }


def bakery_json(client: OpenAI, model: str, max_tokens: int, constrained: bool = True) -> dict[str, Any]:
    """One bakery formulation as JSON; constrained=False asks by prompt only, to price the grammar."""
    began = time.perf_counter()
    response_format: Any = {"type": "json_object", "schema": FORMULATION_SCHEMA}
    system = SYSTEM + ("" if constrained else f" JSON schema: {json.dumps(FORMULATION_SCHEMA)}")
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": BAKERY}],
        temperature=0.0,
        max_tokens=max_tokens,
        **({"response_format": response_format} if constrained else {}),
    )
    seconds = time.perf_counter() - began
    content = reply.choices[0].message.content or ""
    try:
        parsed: Any = json.loads(content, strict=False)
    except json.JSONDecodeError:
        parsed = None
    usage = reply.usage
    return {
        "seconds": round(seconds, 2),
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "finish_reason": reply.choices[0].finish_reason,
        "parsed": parsed is not None,
        "answer": parsed if parsed is not None else content[:500],
    }


def run_with_threads(model: registry.LocalModel, threads: int, force: bool) -> dict[str, Any]:
    free = choose_threads().threads
    load_before = load1()
    if threads > free and not force:
        return {"threads": threads, "skipped": f"only {free} free core(s) (load {load_before:.2f})"}
    log(f"threads={threads}: starting server (load {load_before:.2f})")
    with LocalServer(model, threads=threads, progress=False) as local:
        client = OpenAI(base_url=local.base_url, api_key="not-needed", timeout=600, max_retries=0)
        log(f"threads={threads}: generation")
        speed = generation_speed(client, model.name)
        log(f"threads={threads}: bakery JSON")
        bakery = bakery_json(client, model.name, model.max_tokens)
        log(f"threads={threads}: bakery JSON, prompt only (no grammar)")
        bakery_plain = bakery_json(client, model.name, model.max_tokens, constrained=False)
        startup = local.startup_seconds
    return {
        "threads": threads,
        "load1_before": load_before,
        "load1_after": load1(),
        "server_start_s": round(startup or 0.0, 2),
        "generation": speed,
        "bakery_json": bakery,
        "bakery_json_unconstrained": bakery_plain,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--skip-assembly", action="store_true")
    parser.add_argument("--force", action="store_true", help="also run thread counts above the free cores")
    args = parser.parse_args()
    model = registry.get_model()
    report: dict[str, Any] = {
        "model": model.name,
        "cores": choose_threads().cores,
        "load1_start": load1(),
    }
    if not args.skip_assembly:
        log("assembling into a scratch cache dir")
        report["assembly"] = measure_assembly(model)
    registry.ensure_weights(model.name)  # the real cache, for the servers below
    report["runs"] = [run_with_threads(model, int(n), args.force) for n in args.threads.split(",")]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
