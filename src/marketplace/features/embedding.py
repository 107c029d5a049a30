"""Run frozen encoders over a catalogue once and cache the vectors.

Heads train on cached embeddings, so an epoch costs milliseconds instead of a pass through
a CNN: the encoders run once per change of encoder settings, not per epoch or per head
hyper-parameter. Each cache records which encoder made it, so a mismatch is caught when
vectors from different encoders would otherwise be mixed.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from marketplace.compute.batches import Runner, chunks, stream_batches
from marketplace.core.config import EmbedImagesParams, EmbedTextParams
from marketplace.core.io import RowBlocks, file_sha256, text_sha256, write_npz
from marketplace.features.encoders import ImageEncoder, TextEncoder, image_backbone
from marketplace.features.preprocessing import ImagePreprocessing, listing_text


@dataclass(frozen=True)
class EmbeddingSet:
    """Row ``i`` of ``vectors`` is the embedding of ``ids[i]``; ``spec`` says who made it."""

    ids: np.ndarray  # str
    vectors: np.ndarray  # float32 [N, D]
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.vectors):
            raise ValueError(f"{len(self.ids)} ids but {len(self.vectors)} vectors")

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {str(i): k for k, i in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, path: Path) -> None:
        """One ``.npz``: ids, float32 vectors and the spec as JSON (same vectors, same bytes)."""
        _write_embeddings(path, self.ids, self.vectors.astype(np.float32), self.spec)

    @classmethod
    def load(cls, path: Path) -> EmbeddingSet:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["ids"], data["vectors"], json.loads(str(data["spec"])))

    def lookup(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors, found)`` for ``ids``: zeros and ``found=False`` where an id is absent."""
        position = self._positions
        rows = np.array([position.get(str(i), -1) for i in ids], dtype=np.int64)
        found = rows >= 0
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        out[found] = self.vectors[rows[found]]
        return out, found


@dataclass
class EmbeddingStream:
    """An ``EmbeddingSet`` whose vectors arrive in row blocks, in the order of ``ids``
    (``compute.stream_batches``: one block in process, one per batch on Ray): saved block by
    block, so the stage holds one batch of vectors and not the catalogue's, or collected."""

    ids: np.ndarray  # str
    blocks: Iterator[np.ndarray]  # float32 [k, D] each, consecutive rows
    spec: Callable[[int], dict[str, Any]]  # who made the vectors, given their dimension
    keys: np.ndarray | None = None  # str: SHA-256 of each row's input (what reuse is keyed by)
    reused: int = 0  # rows taken from the previous file (``reusable_vectors``)
    computed: int = 0  # rows the encoder ran on now

    def save(self, path: Path) -> int:
        """The file ``EmbeddingSet.save`` writes (plus the ``keys``), to the byte; returns
        the dimension."""
        first = next(self.blocks)
        dim = int(first.shape[1])
        vectors = (np.asarray(b, dtype=np.float32) for b in itertools.chain([first], self.blocks))
        _write_embeddings(
            path, self.ids, RowBlocks(len(self.ids), vectors), self.spec(dim), self.keys
        )
        return dim

    def collect(self) -> EmbeddingSet:
        """All of it in memory."""
        vectors = np.concatenate(list(self.blocks))
        return EmbeddingSet(self.ids, vectors, self.spec(int(vectors.shape[1])))


def _write_embeddings(
    path: Path,
    ids: np.ndarray,
    vectors: np.ndarray | RowBlocks,
    spec: dict[str, Any],
    keys: np.ndarray | None = None,
) -> None:
    """The embeddings file (``EmbeddingSet.load`` reads it), from whole or streamed vectors;
    ``keys`` (the content hash of each row's input) lets the next run reuse the rows."""
    arrays: dict[str, np.ndarray | RowBlocks] = {
        "ids": ids.astype(str),
        "vectors": vectors,
        "spec": np.array(json.dumps(spec, sort_keys=True)),
    }
    if keys is not None:
        arrays["keys"] = keys.astype(str)
    write_npz(path, arrays)


def reusable_vectors(
    path: Path | None, spec_matches: Callable[[dict[str, Any]], bool]
) -> tuple[dict[str, int], np.ndarray] | None:
    """The rows an incremental run may reuse from the embeddings file at ``path``: content
    key -> row, and the vectors; ``None`` when there is no file, it has no keys (written
    before reuse existed) or another encoder spec made it (then everything is recomputed)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if "keys" not in data.files or not spec_matches(json.loads(str(data["spec"]))):
                return None
            keys, vectors = data["keys"], data["vectors"]
    except (OSError, ValueError, KeyError):  # unreadable: start cold
        return None
    return {str(k): row for row, k in enumerate(keys)}, vectors


def _incremental(
    ids: np.ndarray,
    keys: list[str],
    items: Sequence[Any],
    make: Callable[..., Any],
    spec: Callable[[int], dict[str, Any]],
    previous: tuple[dict[str, int], np.ndarray] | None,
    *,
    runner: Runner | None,
    progress: bool,
    chunk: int = 4096,
) -> EmbeddingStream:
    """An ``EmbeddingStream`` of ``items`` (row ``i`` is ``ids[i]``, its input's hash
    ``keys[i]``) that runs the encoder only on rows whose key ``previous`` lacks and takes
    the others' vectors from it: the same rows, in the same order, as a cold run."""
    rows = np.array(
        [-1 if previous is None else previous[0].get(k, -1) for k in keys], dtype=np.int64
    )
    todo = [item for item, row in zip(items, rows, strict=True) if row < 0]
    key_array = np.array(keys, dtype=str)
    if previous is None or not len(rows):  # cold (``stream_batches`` as it always ran)
        cold = stream_batches(make, todo, runner, progress=progress)
        return EmbeddingStream(ids, cold, spec, key_array, 0, len(todo))
    computed = stream_batches(make, todo, runner, progress=progress) if todo else iter(())
    old = previous[1]

    def merged() -> Iterator[np.ndarray]:  # one chunk of rows at a time, in order
        pending: list[np.ndarray] = []
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            out = np.empty((len(part), old.shape[1]), dtype=np.float32)
            found = part >= 0
            out[found] = old[part[found]]
            need = int((~found).sum())
            while sum(len(b) for b in pending) < need:
                pending.append(np.asarray(next(computed), dtype=np.float32))
            fresh = np.concatenate(pending) if pending else np.zeros((0, old.shape[1]))
            out[~found] = fresh[:need]
            pending = [fresh[need:]] if len(fresh) > need else []
            yield out

    return EmbeddingStream(ids, merged(), spec, key_array, len(rows) - len(todo), len(todo))


@functools.cache
def bf16_native() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), as oneDNN reports it.

    Elsewhere bf16 autocast is emulated: measured on an AVX2-only AMD EPYC, EfficientNet-
    Lite2 ran at 0.12 img/s under bf16 autocast against 2.8 img/s in fp32 (23x slower).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(requested: bool) -> bool:
    """bf16 where it is asked for and the CPU has it; fp32 otherwise."""
    return requested and bf16_native()


def inference_context(bf16: bool) -> Any:
    """bf16 autocast on CPU where asked and native (about 2x faster on CPUs with AVX-512
    BF16); fp32 where the CPU would only emulate it (``bf16_native``)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16(bf16) else nullcontext()


@torch.inference_mode()
def embed_image_files(
    encoder: ImageEncoder,
    preprocessing: ImagePreprocessing,
    paths: Sequence[Path],
    *,
    batch_size: int = 64,
    channels_last: bool = True,
    bf16: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Embeddings of image files (cleaned canvases), in order: float32 ``[N, D]``.

    Each batch is decoded in this thread, then run through the network. A thread decoding
    the next batch meanwhile (the code until 2026-11-30) made the stage slower on a 2-core
    host, where it competes with torch's own threads: 13.8 against 15.6 img/s at batch 8,
    16.7 against 19.7 at batch 4 (320 real photos, median of 3 alternating runs, the same
    vectors; BENCHMARKS.md). Decoding is ~5 ms a photo of the ~50 the network takes.
    """
    encoder.eval()
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
    out = np.zeros((len(paths), encoder.embedding_dim), dtype=np.float32)
    with tqdm(total=len(paths), desc="embed images", unit="img", disable=not progress) as bar:
        for start, batch in zip(itertools.count(0, batch_size), chunks(paths, batch_size)):
            pixels = torch.stack([preprocessing.from_file(p) for p in batch])
            if channels_last:
                pixels = pixels.contiguous(memory_format=torch.channels_last)
            with inference_context(bf16):
                vectors = encoder(pixels)
            out[start : start + len(pixels)] = vectors.float().numpy()
            bar.update(len(pixels))
    return out


@torch.inference_mode()
def embed_texts(
    encoder: TextEncoder,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    bf16: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """Embeddings of texts, in order: float32 ``[N, D]``.

    Texts are batched by length (and put back in order), so a batch pads to similar
    lengths instead of to the longest text in the catalogue.
    """
    encoder.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), encoder.embedding_dim), dtype=np.float32)
    bar = tqdm(total=len(texts), desc="embed text", unit="text", disable=not progress)
    with bar:
        for rows in chunks(order, batch_size):
            with inference_context(bf16):
                out[rows] = encoder.encode([texts[i] for i in rows]).float().numpy()
            bar.update(len(rows))
    return out


def image_spec(params: EmbedImagesParams, canvas_size: int) -> dict[str, Any]:
    """What an image embedding depends on: recorded with the vectors and the models."""
    backbone = image_backbone(params.encoder)
    return {
        "kind": "image",
        "encoder": params.encoder,
        "weights": backbone.weights,
        "dim": backbone.embedding_dim,
        "canvas_size": canvas_size,
        "image_size": params.image_size,
        "mean": list(backbone.mean),
        "std": list(backbone.std),
        "bf16": use_bf16(params.bf16),  # what made the vectors, on this CPU
    }


def text_spec(params: EmbedTextParams, dim: int) -> dict[str, Any]:
    """What a text embedding depends on: recorded with the vectors and the models."""
    return {
        "kind": "text",
        "encoder": params.encoder,
        "dim": dim,
        "max_tokens": params.max_tokens,
        "text": "title. description",
    }


def image_embedder(
    params: EmbedImagesParams, canvas_size: int, *, progress: bool = True
) -> Callable[[Sequence[str]], np.ndarray]:
    """The per-batch function of ``embed_images`` (canvas paths -> vectors), one encoder."""
    spec = image_spec(params, canvas_size)
    preprocessing = ImagePreprocessing(
        canvas_size, params.image_size, tuple(spec["mean"]), tuple(spec["std"])
    )
    return functools.partial(
        embed_image_files,
        ImageEncoder(params.encoder),
        preprocessing,
        batch_size=params.batch_size,
        channels_last=params.channels_last,
        bf16=params.bf16,
        progress=progress,
    )


def stream_catalogue_images(
    images_dir: Path,
    params: EmbedImagesParams,
    *,
    canvas_size: int,
    progress: bool = True,
    runner: Runner | None = None,
    previous: Path | None = None,
) -> EmbeddingStream:
    """Embed every cleaned canvas in ``images_dir`` (``<image id>.jpg``), sorted by id; in
    this process, or batch by batch with ``runner`` (``marketplace.compute.batches``). The vectors
    come as they are made: ``EmbeddingStream.save`` writes them, ``collect`` holds them.

    Incremental: each row is keyed by the SHA-256 of its canvas file; with ``previous``
    (the last run's file, usually the output itself) rows whose canvas is unchanged and
    whose encoder spec (encoder, weights, canvas and input size, bf16) is the same are
    reused, and only new or changed canvases go through the encoder."""
    paths = sorted(images_dir.glob("*.jpg"))
    make = functools.partial(image_embedder, params, canvas_size)
    spec = image_spec(params, canvas_size)
    return _incremental(
        np.array([p.stem for p in paths]),
        [file_sha256(p) for p in paths],
        [str(p) for p in paths],
        make,
        lambda _: spec,
        reusable_vectors(previous, lambda old: old == spec),
        runner=runner,
        progress=progress,
    )


def text_embedder(
    params: EmbedTextParams, *, progress: bool = True
) -> Callable[[Sequence[str]], np.ndarray]:
    """The per-batch function of ``embed_text`` (texts -> vectors), one encoder."""
    encoder = TextEncoder(params.encoder, max_tokens=params.max_tokens)
    return functools.partial(
        embed_texts, encoder, batch_size=params.batch_size, bf16=params.bf16, progress=progress
    )


def stream_catalogue_texts(
    products: pd.DataFrame,
    params: EmbedTextParams,
    *,
    progress: bool = True,
    runner: Runner | None = None,
    previous: Path | None = None,
) -> EmbeddingStream:
    """Embed each product's ``listing_text`` (one row per product id, sorted by id); in this
    process, or batch by batch with ``runner``. ``EmbeddingStream.save`` writes the vectors
    as they come, ``collect`` holds them.

    Incremental: each row is keyed by the SHA-256 of its text; with ``previous`` (the last
    run's file) rows whose text and encoder spec are unchanged are reused."""
    unique = products.drop_duplicates("product_id").sort_values("product_id")
    texts = [
        listing_text(t, d) for t, d in zip(unique["title"], unique["description"], strict=True)
    ]
    make = functools.partial(text_embedder, params)
    return _incremental(
        unique["product_id"].to_numpy(str),
        [text_sha256(t) for t in texts],
        texts,
        make,
        functools.partial(text_spec, params),
        reusable_vectors(previous, lambda old: old == text_spec(params, int(old.get("dim", 0)))),
        runner=runner,
        progress=progress,
    )
