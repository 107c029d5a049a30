"""The built-in sample export: a deterministic synthetic Gumtree-format dataset.

Demos and CI run the pipeline on it (``python -m pipeline.sample --out data``). It is a
tool of the project, not part of the ``marketplace`` library: nothing in the library or the
API imports it.
"""

from sample.generator import SampleFaults, generate_sample

__all__ = ["SampleFaults", "generate_sample"]
