"""A Trace-style execution graph: nodes, @bundle, feedback propagation and LLM optimizers."""
