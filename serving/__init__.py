"""FastAPI service for the production model (built in the serving issue)."""
