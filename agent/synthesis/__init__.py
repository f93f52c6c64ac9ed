"""Synthesized benchmark data with solver-verified labels (OptMATH-style, see issue 7).

    families      seeded generators -> IR instances (complexity knob 1..5, infeasible/unbounded variants)
    complexity    score from the instance, easy / medium / hard bands
    generate      HiGHS labels (polished, independently checked; time-limit hits dropped)
    numbers       number extraction and matching for story checking
    backtranslate facts in words -> LLM story -> number check -> refinement rounds
    dedup         MinHash + numbers near-duplicate check against every test set in datasets/
    pipeline      orchestration: forward modeling + rejection sampling, resumable JSONL output

Typical use (the CLI is `optitrace synth`):

    from agent.synthesis import SynthConfig, StoryWriter, AgentFormulator, DedupIndex, run_pipeline
    summary = run_pipeline(config, StoryWriter(client), AgentFormulator(ModelingAgent(client)),
                           DedupIndex.from_datasets())
"""

from __future__ import annotations

import importlib

# Exports load lazily: `agent.synthesis.families` alone should not pay for Pyomo, HiGHS and the
# LLM client, and the CLI imports this package on every `optitrace` command.
_LAZY_EXPORTS = {
    "BackTranslation": "agent.synthesis.backtranslate",
    "StoryWriter": "agent.synthesis.backtranslate",
    "check_story": "agent.synthesis.backtranslate",
    "instance_facts": "agent.synthesis.backtranslate",
    "ComplexityScore": "agent.synthesis.complexity",
    "band_of": "agent.synthesis.complexity",
    "score_formulation": "agent.synthesis.complexity",
    "ClosestMatch": "agent.synthesis.dedup",
    "DedupIndex": "agent.synthesis.dedup",
    "FAMILIES": "agent.synthesis.families",
    "Family": "agent.synthesis.families",
    "SynthInstance": "agent.synthesis.families",
    "family_names": "agent.synthesis.families",
    "get_family": "agent.synthesis.families",
    "InstanceLabel": "agent.synthesis.generate",
    "label_instance": "agent.synthesis.generate",
    "extract_numbers": "agent.synthesis.numbers",
    "match_numbers": "agent.synthesis.numbers",
    "AgentFormulator": "agent.synthesis.pipeline",
    "ForwardResult": "agent.synthesis.pipeline",
    "Formulator": "agent.synthesis.pipeline",
    "SynthConfig": "agent.synthesis.pipeline",
    "SynthSummary": "agent.synthesis.pipeline",
    "forward_verdict": "agent.synthesis.pipeline",
    "run_pipeline": "agent.synthesis.pipeline",
}
__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str) -> object:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agent.synthesis' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
