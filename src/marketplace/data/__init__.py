"""The raw export: its schema, ingest, cleaning, splits and the built-in synthetic sample."""
