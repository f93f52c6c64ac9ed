"""The agent trains itself: its prompts (and optionally its sanity code) are optimized with
trace_graph on solver feedback. See `train_agent` and `optitrace train`."""

from agent.training.data import DataSplit, TestSetError, prepare_data, split_problems, test_set_matches
from agent.training.feedback import ItemOutcome, OutcomeKind, item_feedback
from agent.training.guards import GuardedOPRO, GuardedOptoPrime, ParameterGuard, agent_validators
from agent.training.train import (
    DEFAULT_PARAMETERS,
    SMALL_MODEL_PARAMETERS,
    TrainReport,
    TrainSettings,
    optimizer_llm_config,
    save_params,
    train_agent,
)

__all__ = [
    "DEFAULT_PARAMETERS",
    "SMALL_MODEL_PARAMETERS",
    "DataSplit",
    "GuardedOPRO",
    "GuardedOptoPrime",
    "ItemOutcome",
    "OutcomeKind",
    "ParameterGuard",
    "TestSetError",
    "TrainReport",
    "TrainSettings",
    "agent_validators",
    "item_feedback",
    "optimizer_llm_config",
    "prepare_data",
    "save_params",
    "split_problems",
    "test_set_matches",
    "train_agent",
]
