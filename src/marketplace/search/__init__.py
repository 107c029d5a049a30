"""Similar products: building the FAISS index, serving it, and the live catalogue on top."""
