"""Tracing PyTorch models into channel-dependency graphs. Never imports a solver."""
