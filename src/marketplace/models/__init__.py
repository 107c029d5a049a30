"""Models: the classifier architectures, heads and packages (encoders: see features)."""
