"""Python engine vs native engine: throughput of the embedded model under concurrent requests.

Both engines serve the same GGUF on the same threads; each gets the same K chat requests (a word
problem answered as schema-constrained JSON, different seeds) from K client threads at once. The
python engine (llama_cpp.server) answers them one after another; the native one (llama-server
--parallel K) decodes them together. Prints one JSON object: wall seconds, completion tokens/s and
the native/python ratio measured in this run. Needs the [local] extra and `optitrace llm build-native`.

    python benchmarks/llm_engines.py [--requests 4] [--max-tokens 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from openai import OpenAI

from agent.local_llm.server import LocalServer

PROBLEM = (
    "A workshop makes chairs and tables. A chair needs 2 hours of carpentry and 1 hour of painting; a "
    "table needs 3 hours of carpentry and 2 hours of painting. 120 carpentry hours and 70 painting hours "
    "are available. Profit is $30 per chair and $50 per table. How many of each maximize profit?"
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "notes": {"type": "string"},
        "objective": {"type": "string"},
        "constraints": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["notes", "objective", "constraints"],
}


def ask(client: OpenAI, model: str, seed: int, max_tokens: int) -> int:
    reply = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You write linear programs as JSON. Notes first."},
            {"role": "user", "content": PROBLEM},
        ],
        temperature=0.7,
        seed=seed,
        max_tokens=max_tokens,
        response_format={"type": "json_object", "schema": SCHEMA},  # type: ignore[typeddict-item]
    )
    return reply.usage.completion_tokens if reply.usage else 0


def measure(engine: str, requests: int, max_tokens: int, threads: int) -> dict[str, float]:
    parallel = requests if engine == "native" else 1
    with LocalServer(threads=threads, engine=engine, parallel=parallel, progress=False) as local:
        client = OpenAI(base_url=local.base_url, api_key="not-needed", timeout=1200)
        ask(client, local.model.name, 0, 8)  # warm-up: first-request costs are not throughput
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=requests) as pool:
            tokens = sum(
                pool.map(lambda seed: ask(client, local.model.name, seed, max_tokens), range(1, requests + 1))
            )
        seconds = time.perf_counter() - began
    return {
        "seconds": round(seconds, 2),
        "completion_tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    results = {
        engine: measure(engine, arguments.requests, arguments.max_tokens, arguments.threads)
        for engine in ("python", "native")
    }
    ratio = results["native"]["tokens_per_second"] / max(results["python"]["tokens_per_second"], 1e-9)
    print(json.dumps({**vars(arguments), **results, "native_over_python_tokens_per_second": round(ratio, 2)}))


if __name__ == "__main__":
    main()
