"""marketplace: product categorisation and similar-product search for marketplace listings.

One package per concern: ``core`` (typed params.yaml, errors, I/O, paths, databases),
``compute`` (where per-batch work runs), ``data`` (the raw export and its cleaning),
``features`` (preprocessing and frozen encoders), ``models`` (architectures),
``training``, ``search`` (the similar-products index), ``mlops`` (tracking, registry,
promotion, evaluation, monitoring); ``inference`` is the one inference class and ``cli``
the ``marketplace`` command. Importing the package does nothing else: data stages stay
free of torch. The code that needs torchvision or transformers lives under
``marketplace.features``, which first makes torchvision importable on CPU-only torch (see
``marketplace._torchvision_compat``).
"""

__version__ = "0.1.0"
