"""Pure-math solvers for channel selection: numpy in, numpy out. Never imports torch."""
