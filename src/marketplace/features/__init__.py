"""Features: the one preprocessing module and the frozen encoders (vectors, TF-IDF).

Importing this package first defines torchvision's missing op schemas where its compiled
ops do not load, so ``torchvision`` and ``transformers`` import cleanly on CPU torch.
"""

from marketplace import _torchvision_compat  # noqa: F401  (must precede any torchvision import)
