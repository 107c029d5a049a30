"""marketplace: product categorisation and similar-product search for marketplace listings.

Importing the package does nothing else: data stages stay free of torch. The code that
needs torchvision or transformers lives under ``marketplace.models``, which first makes
torchvision importable on CPU-only torch (see ``marketplace._torchvision_compat``).
"""

__version__ = "0.1.0"
