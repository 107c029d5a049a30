"""A BERT encoder in plain torch, for local BERT checkpoints such as the packaged MiniLM.

Why not ``transformers.AutoModel``: importing its BERT model pulls in torch.distributed,
torch._dynamo and sympy, about 1.9 s of a 7 s API cold start, for a six-layer encoder of
~100 lines. This module computes the same function (tests compare the two to 1e-5) with the
same parameter names, so checkpoints and fine-tuned layers load either way, and tokenises
with the checkpoint's own ``tokenizer.json`` through the ``tokenizers`` library (what the
fast ``transformers`` tokenizer runs underneath). Hub names and non-BERT models still load
through ``transformers``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` this encoder uses."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    pad_token_id: int

    @classmethod
    def read(cls, folder: Path) -> BertConfig:
        raw = json.loads((folder / CONFIG_FILE).read_text())
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})


def is_local_bert(folder: Path) -> bool:
    """True for a checkpoint folder this module can load (absolute-position BERT, GELU)."""
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (
        raw.get("model_type") == "bert"
        and raw.get("hidden_act") == "gelu"
        and raw.get("position_embedding_type", "absolute") == "absolute"
        and (folder / TOKENIZER_FILE).is_file()
        and (folder / WEIGHTS_FILE).is_file()
    )


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings(token_type_ids)
            + self.position_embeddings(positions)[None]
        )
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.query(x)),
            split(self.key(x)),
            split(self.value(x)),
            attn_mask=mask,
            dropout_p=self.dropout_p if self.training else 0.0,
            scale=1.0 / math.sqrt(d // self.heads),
        )
        return out.transpose(1, 2).reshape(b, n, d)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, BERT's "gelu"


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertSelfOutput(config, config.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoderStack(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor


class BertModel(nn.Module):
    """Token states of a BERT encoder; parameter names as in ``transformers.BertModel``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoderStack(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> BertOutput:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        # Padding keys are masked out for every query: [batch, 1 (heads), 1 (queries), keys].
        mask = attention_mask.bool()[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return BertOutput(last_hidden_state=x)

    @classmethod
    def load(cls, folder: Path) -> BertModel:
        """From a checkpoint folder; the pooler and any pretraining heads are not used."""
        from safetensors.torch import load_file

        model = cls(BertConfig.read(folder))
        tensors = {
            name.removeprefix("bert."): tensor
            for name, tensor in load_file(folder / WEIGHTS_FILE).items()
        }
        tensors = {k: v for k, v in tensors.items() if not k.startswith(("pooler.", "cls."))}
        tensors.pop("embeddings.position_ids", None)  # a buffer in older checkpoints
        model.load_state_dict(tensors, strict=True)
        return model


class BertTokenizer:
    """``tokenizer.json`` through ``tokenizers``: ids, attention mask and type ids, padded
    to the longest text of the batch and truncated to ``max_length`` tokens."""

    def __init__(self, folder: Path, *, max_length: int, pad_token_id: int) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # Configured once: encode_batch may run on several threads at a time.
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding(pad_id=pad_token_id)
        self.pad_token_id = pad_token_id

    def __call__(self, texts: Sequence[str], pad_to: int | None = None) -> dict[str, torch.Tensor]:
        """Tokens of a batch; ``pad_to`` pads further to a fixed length (training batches)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        tokens = {
            "input_ids": torch.tensor([e.ids for e in encodings]),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
            "token_type_ids": torch.tensor([e.type_ids for e in encodings]),
        }
        if pad_to is not None and pad_to > tokens["input_ids"].shape[1]:
            extra = pad_to - tokens["input_ids"].shape[1]
            fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
            tokens = {k: F.pad(v, (0, extra), value=fill[k]) for k, v in tokens.items()}
        return tokens
