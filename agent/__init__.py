"""The modeling agent, chat sessions, evaluation and synthesis pipelines, and the CLI."""
