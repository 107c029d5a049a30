"""Training: loops, metrics and plots for the classifiers (no architectures: see models)."""
