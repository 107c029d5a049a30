"""Names of the artifacts inside a logged marketplace model (``mlflow_model.py``'s pyfunc).

The registry writes them and the API reads them; they live here, beside neither, so the
serving side needs no registry (training-time) code to find a model's files.
"""

PACKAGE_ARTIFACT = "package"  # the classifier folder, inside the logged model's artifacts
INDEX_ARTIFACT = "index"  # the FAISS index folder, beside it (combined model only)
