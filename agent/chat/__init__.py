"""Chat about one optimization model: create it, change it, ask what-if / why-not / sensitivity
questions, diagnose it, undo, save/load and export. `ChatSession(agent, llm).send(text)`."""

from agent.chat.analysis import Comparison, Diagnosis, Sensitivity
from agent.chat.edits import EditError, ModelDiff, ModelEdit, apply_edits, model_diff
from agent.chat.export import ExportError, export_model, pyomo_script, write_lp
from agent.chat.intents import TurnIntent, classify
from agent.chat.session import ChatSession, ChatTurn, ModelSnapshot, SessionFileError, SessionRecord

__all__ = [
    "ChatSession",
    "ChatTurn",
    "Comparison",
    "Diagnosis",
    "EditError",
    "ExportError",
    "ModelDiff",
    "ModelEdit",
    "ModelSnapshot",
    "Sensitivity",
    "SessionFileError",
    "SessionRecord",
    "TurnIntent",
    "apply_edits",
    "classify",
    "export_model",
    "model_diff",
    "pyomo_script",
    "write_lp",
]
