"""Operating models: tracking, registry, pyfunc, promotion, evaluation and monitoring."""
