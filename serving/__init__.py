"""FastAPI service: the production model and its FAISS index, from the MLflow registry."""
