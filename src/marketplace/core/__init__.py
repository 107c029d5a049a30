"""Infrastructure every layer may use: the live databases (``db``)."""
