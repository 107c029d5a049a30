"""A trained classifier as one self-describing folder, and its inference entry point.

The folder holds ``config.json`` (kind, label map, head architecture and arguments, the
encoder specs the embeddings came from, TF-IDF and price settings, metrics) and
``weights.safetensors`` (the head's tensors and the TF-IDF IDF weights; for a model whose
encoder was fine-tuned, also the tensors of its unfrozen stages under ``image_encoder.`` or
``text_encoder.``, recorded as ``finetuned`` in that encoder's spec). No pickled classes:
loading needs this package and the pretrained encoders it names, nothing else.
``ListingClassifier`` turns raw listings (photo bytes, text, price) into probabilities
through exactly the preprocessing used in training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from marketplace.data.labels import LabelMap
from marketplace.features.embedding import inference_context
from marketplace.features.encoders import (
    ImageEncoder,
    TextEncoder,
    load_encoder_state,
    shared_image_encoder,
    shared_text_encoder,
)
from marketplace.features.preprocessing import ImagePreprocessing, listing_text
from marketplace.features.tfidf import HashedTfidf, TfidfConfig
from marketplace.models.heads import CombinedClassifier, MLPHead, TextClassifier
from marketplace.models.price import PriceScaler
from marketplace.models.query import query_kind

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
KINDS = ("vision", "text", "combined")
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "MLPHead": MLPHead,
    "TextClassifier": TextClassifier,
    "CombinedClassifier": CombinedClassifier,
}
_IDF_KEY = "tfidf.idf"
ENCODER_PREFIXES = ("image_encoder.", "text_encoder.")


@dataclass
class ClassifierPackage:
    """Everything a classifier folder holds, in memory."""

    kind: str
    label_map: LabelMap
    architecture: str
    arguments: dict[str, Any]
    head: nn.Module
    image_spec: dict[str, Any] | None
    text_spec: dict[str, Any] | None
    tfidf: HashedTfidf | None
    prices: PriceScaler | None
    info: dict[str, Any]  # metrics, data version, commit: for people, not for loading
    # Fine-tuned encoder tensors (the unfrozen stages only), keyed "image_encoder.<name>" or
    # "text_encoder.<name>" with <name> as in the encoder's state_dict(); empty by default.
    encoder_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    # Temperature per query kind (``models.query.QUERY_KINDS``), fitted on val: logits are
    # divided by it before the softmax. A kind without one (older packages) uses 1.
    calibration: dict[str, float] = field(default_factory=dict)

    def temperature(self, kind: str) -> float:
        return float(self.calibration.get(kind, 1.0))

    def encoder_overrides(self, prefix: str) -> dict[str, torch.Tensor]:
        """The fine-tuned tensors of one encoder (``image_encoder.`` / ``text_encoder.``),
        keyed as in its ``state_dict()``."""
        return {
            k[len(prefix) :]: v for k, v in self.encoder_tensors.items() if k.startswith(prefix)
        }

    def save(self, folder: Path) -> None:
        """Write ``config.json`` and ``weights.safetensors`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"head.{k}": v.detach().contiguous() for k, v in self.head.state_dict().items()}
        if self.tfidf is not None:
            tensors[_IDF_KEY] = torch.from_numpy(self.tfidf.idf)
        for key, value in self.encoder_tensors.items():
            if not key.startswith(ENCODER_PREFIXES):
                raise ValueError(f"encoder tensor {key!r} must start with {ENCODER_PREFIXES}")
            tensors[key] = value.detach().contiguous()
        save_file(tensors, str(folder / WEIGHTS_FILE))
        config = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "label_map": self.label_map.to_dict(),
            "architecture": {"class": self.architecture, "arguments": self.arguments},
            "image_encoder": self.image_spec,
            "text_encoder": self.text_spec,
            "tfidf": None if self.tfidf is None else self.tfidf.config.to_dict(),
            "price": None
            if self.prices is None
            else {"mean": self.prices.mean, "std": self.prices.std},
            "info": self.info,
            "calibration": dict(sorted(self.calibration.items())),
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ClassifierPackage:
        """Read a folder written by ``save``; ``ValueError`` if it is not one."""
        try:
            config = json.loads((folder / CONFIG_FILE).read_text())
            tensors = load_file(str(folder / WEIGHTS_FILE))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{folder} is not a classifier package: {exc}") from None
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{folder}: unsupported format {config.get('format_version')}")
        architecture = config["architecture"]
        head = ARCHITECTURES[architecture["class"]](**architecture["arguments"])
        head.load_state_dict(
            {k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")}
        )
        head.eval()
        tfidf = None
        if config["tfidf"] is not None:
            tfidf = HashedTfidf(TfidfConfig.from_dict(config["tfidf"]), tensors[_IDF_KEY].numpy())
        prices = None if config["price"] is None else PriceScaler(**config["price"])
        return cls(
            config["kind"],
            LabelMap.from_dict(config["label_map"]),
            architecture["class"],
            architecture["arguments"],
            head,
            config["image_encoder"],
            config["text_encoder"],
            tfidf,
            prices,
            config.get("info", {}),
            {k: v for k, v in tensors.items() if k.startswith(ENCODER_PREFIXES)},
            {k: float(v) for k, v in config.get("calibration", {}).items()},
        )


@dataclass(frozen=True)
class Encoded:
    """What the frozen encoders made of N listings (``ListingClassifier.encode``).

    ``image_vectors`` (zeros where a listing has no photo) with ``has_image``, and
    ``text_vectors`` (zeros where it has no text, for the combined model); ``None`` for a
    branch the model has not. ``texts`` are the cleaned texts (TF-IDF reads them)."""

    texts: list[str]
    image_vectors: torch.Tensor | None
    has_image: torch.Tensor | None
    text_vectors: torch.Tensor | None

    def image_vector(self, row: int) -> np.ndarray | None:
        """Row ``row``'s photo vector, or ``None`` when it has no photo."""
        if self.image_vectors is None or (self.has_image is not None and not self.has_image[row]):
            return None
        return self.image_vectors[row].numpy()

    def text_vector(self, row: int) -> np.ndarray | None:
        """Row ``row``'s text vector, or ``None`` when it has no text."""
        if self.text_vectors is None or not self.texts[row]:
            return None
        return self.text_vectors[row].numpy()

    def rows(self, selected: Sequence[int]) -> Encoded:
        """Only the listings at ``selected``, in that order."""
        pick = list(selected)
        return Encoded(
            [self.texts[i] for i in pick],
            None if self.image_vectors is None else self.image_vectors[pick],
            None if self.has_image is None else self.has_image[pick],
            None if self.text_vectors is None else self.text_vectors[pick],
        )


class ListingClassifier:
    """Raw listings in, category probabilities out: the one inference path.

    Used by the MLflow pyfunc model, the API and the CLI alike. Encoders load once, in
    the constructor; ``predict_proba`` is then pure computation.
    """

    def __init__(self, package: ClassifierPackage) -> None:
        self.package = package
        self.image_encoder: ImageEncoder | None = None
        self.preprocessing: ImagePreprocessing | None = None
        if package.image_spec is not None:
            spec = package.image_spec
            overrides = package.encoder_overrides(ENCODER_PREFIXES[0])
            if overrides:  # a fine-tuned encoder: its own copy
                self.image_encoder = ImageEncoder(spec["encoder"]).eval()
                load_encoder_state(self.image_encoder, overrides)
            else:  # the pretrained one, shared with other classifiers of this process
                self.image_encoder = shared_image_encoder(spec["encoder"])
            # The layout the embed stage used (no effect on the numbers; with bf16 it is
            # ~1.5x faster on this CPU, see BENCHMARKS.md).
            self.image_encoder.to(memory_format=torch.channels_last)
            self.preprocessing = ImagePreprocessing(
                spec["canvas_size"], spec["image_size"], tuple(spec["mean"]), tuple(spec["std"])
            )
        self.text_encoder: TextEncoder | None = None
        if package.text_spec is not None:
            spec = package.text_spec
            overrides = package.encoder_overrides(ENCODER_PREFIXES[1])
            if overrides:
                self.text_encoder = TextEncoder(spec["encoder"], max_tokens=spec["max_tokens"])
                self.text_encoder.eval()
                load_encoder_state(self.text_encoder, overrides)
            else:
                self.text_encoder = shared_text_encoder(spec["encoder"], spec["max_tokens"])

    @classmethod
    def load(cls, folder: Path) -> ListingClassifier:
        return cls(ClassifierPackage.load(folder))

    @property
    def categories(self) -> tuple[str, ...]:
        return self.package.label_map.categories

    @torch.inference_mode()
    def image_embeddings(self, images: Sequence[bytes | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder embeddings of photos (zeros where ``None``) and a has-image flag.

        A photo that comes more than once (a listing asked as photo alone and with its
        text, as ``marketplace.mlops.evaluation`` does) goes through the encoder once."""
        assert self.image_encoder is not None and self.preprocessing is not None
        present = [i for i, image in enumerate(images) if image is not None]
        out = torch.zeros(len(images), self.image_encoder.embedding_dim)
        if present:
            distinct: dict[bytes, int] = {}
            slots = [distinct.setdefault(images[i], len(distinct)) for i in present]  # type: ignore[arg-type]
            pixels = torch.stack([self.preprocessing.from_upload(photo) for photo in distinct])
            pixels = pixels.contiguous(memory_format=torch.channels_last)
            with inference_context(bool(self.package.image_spec.get("bf16"))):
                out[present] = self.image_encoder(pixels).float()[slots]
        flag = torch.zeros(len(images))
        flag[present] = 1.0
        return out, flag

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings of listing texts."""
        assert self.text_encoder is not None and self.package.text_spec is not None
        with inference_context(bool(self.package.text_spec.get("bf16"))):
            return self.text_encoder.encode(list(texts)).float()

    @torch.inference_mode()
    def encode(
        self,
        *,
        images: Sequence[bytes | None] | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> Encoded:
        """The frozen encoders' part of a prediction: each listing's photo and text vectors.

        Kept apart from ``predict_encoded`` so that serving can log the vectors the model
        used, and a second version with the same encoders can score them again without
        another encoder pass (shadow scoring)."""
        kind = self.package.kind
        n = len(images if images is not None else texts if texts is not None else [])
        images = list(images) if images is not None else [None] * n
        texts_clean = [listing_text(t, None) for t in (texts or [None] * n)]
        image_vectors = has_image = text_vectors = None
        if kind == "vision":
            if any(image is None for image in images):
                raise ValueError("the vision model needs a photo for every row")
            image_vectors, has_image = self.image_embeddings(images)
        elif kind == "text":
            if not all(texts_clean):
                raise ValueError("the text model needs text for every row")
            text_vectors = self.text_embeddings(texts_clean)
        else:
            image_vectors, has_image = self.image_embeddings(images)
            # Rows without text: their text votes are masked out (zero TF-IDF row and
            # sentence vector); the encoder runs only on the texts there are.
            text_vectors = torch.zeros(n, self.text_dim)
            rows = [i for i, t in enumerate(texts_clean) if t]
            if rows:
                text_vectors[rows] = self.text_embeddings([texts_clean[i] for i in rows])
        return Encoded(texts_clean, image_vectors, has_image, text_vectors)

    @torch.inference_mode()
    def predict_encoded(
        self, encoded: Encoded, prices: Sequence[float | None] | None = None
    ) -> np.ndarray:
        """``predict_proba`` from ``encode``'s output: the heads, TF-IDF and calibration."""
        kind = self.package.kind
        texts_clean = encoded.texts
        n = len(texts_clean)
        if kind == "vision":
            assert encoded.image_vectors is not None
            if encoded.has_image is not None and not bool(encoded.has_image.all()):
                raise ValueError("the vision model needs a photo for every row")
            logits = self.package.head(encoded.image_vectors)
            kinds = ["image"] * n
        elif kind == "text":
            assert self.package.tfidf is not None and encoded.text_vectors is not None
            if not all(texts_clean):
                raise ValueError("the text model needs text for every row")
            logits = self.package.head(
                self.package.tfidf.transform(texts_clean), encoded.text_vectors
            )
            kinds = ["text"] * n
        else:
            assert encoded.image_vectors is not None and encoded.has_image is not None
            assert encoded.text_vectors is not None
            kinds = [
                query_kind(bool(text), bool(flag))
                for flag, text in zip(encoded.has_image.tolist(), texts_clean, strict=True)
            ]
            assert self.package.tfidf is not None and self.package.prices is not None
            extra = torch.from_numpy(self.package.prices.transform(list(prices or [None] * n)))
            has_text = torch.tensor([bool(t) for t in texts_clean], dtype=torch.float32)
            logits = self.package.head(
                self.package.tfidf.transform(texts_clean),
                encoded.image_vectors,
                encoded.has_image,
                encoded.text_vectors,
                extra,
                has_text,
            )
        temperature = torch.tensor([self.package.temperature(k) for k in kinds])
        return (logits / temperature.unsqueeze(1)).softmax(dim=1).numpy()

    def predict_proba(
        self,
        *,
        images: Sequence[bytes | None] | None = None,
        texts: Sequence[str | None] | None = None,
        prices: Sequence[float | None] | None = None,
    ) -> np.ndarray:
        """``[N, n_classes]`` calibrated probabilities. Photos are raw bytes (cleaned here,
        as in training); a text is the listing's title and description (or just one).

        The combined model scores each row by the votes of what it brings (a photo, a
        text, or both) and divides its logits by that query kind's temperature."""
        return self.predict_encoded(self.encode(images=images, texts=texts), prices)

    def reuses_encoders_of(self, other: ListingClassifier) -> bool:
        """Whether ``other.encode``'s output is exactly what this classifier's ``encode``
        would compute: the same pretrained encoders and preprocessing, none fine-tuned, and
        every branch this one needs present in the other."""
        mine, theirs = self.package, other.package
        if mine.encoder_tensors or theirs.encoder_tensors:
            return False
        needs_image = mine.kind in ("vision", "combined")
        needs_text = mine.kind in ("text", "combined")
        if needs_image and (theirs.kind == "text" or mine.image_spec != theirs.image_spec):
            return False
        return not (needs_text and (theirs.kind == "vision" or mine.text_spec != theirs.text_spec))

    @property
    def text_dim(self) -> int:
        assert self.package.text_spec is not None
        return int(self.package.arguments["text_dim"])
