"""Where per-batch work runs: in this process (``batches``) or on a Ray cluster (``ray``)."""
