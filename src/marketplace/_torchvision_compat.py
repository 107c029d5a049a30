"""Make ``import torchvision`` work on CPU-only torch when torchvision's compiled ops can't load.

The torchvision wheel available here is a CUDA build: its ``_C`` extension does not load
against the CPU build of torch, and torchvision's import then fails inside
``torch.library.register_fake("torchvision::nms")`` because the op schema was never
defined (``operator torchvision::nms does not exist``). transformers imports torchvision
when it is installed, so it fails too.

Defining the two schemas that torchvision registers fake kernels for unconditionally
(``nms`` and ``qnms``) lets the pure-Python parts import: models, transforms v2.
The ops themselves stay unimplemented (calling ``torchvision.ops.nms`` raises), and
``torchvision.io`` stays unavailable: decode images with Pillow.

This module has an import-time side effect on purpose: it must run before torchvision is
imported, and ``marketplace.features`` (the encoders, the code that uses torchvision or
transformers) imports it first. It does nothing when the compiled ops
load (a matching torchvision build) or when torchvision is not installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

# Schemas copied from torchvision/csrc/ops/nms.cpp (TORCH_LIBRARY_FRAGMENT "torchvision").
_MISSING_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

_library: torch.library.Library | None = None
compiled_ops_loaded: bool = False


def _compiled_ops_load() -> bool:
    """Try what torchvision's own import tries: load its ``_C`` extension into torch."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # torchvision absent: nothing to patch
    for location in spec.submodule_search_locations:
        for candidate in Path(location).glob("_C*.so"):
            try:
                torch.ops.load_library(str(candidate))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def ensure_torchvision_importable() -> None:
    """Define torchvision's missing op schemas once, only if its compiled ops fail to load."""
    global _library, compiled_ops_loaded
    if _library is not None or compiled_ops_loaded:
        return
    compiled_ops_loaded = _compiled_ops_load()
    if compiled_ops_loaded:
        return
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _MISSING_SCHEMAS:
        library.define(schema)
    _library = library  # keep a reference: the registration lives as long as the object


ensure_torchvision_importable()
