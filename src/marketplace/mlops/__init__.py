"""Operating models in production: the prediction log and its feedback."""
