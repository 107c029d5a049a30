"""Model inputs from listings: one implementation for training, indexing and serving.

A photo goes through the same steps wherever it comes from: raw bytes are cleaned onto the
black canvas exactly as the ``clean_images`` stage does (``marketplace.data.images``), the
canvas is resized to the encoder's input size and normalised with the backbone's
statistics. Training reads canvases the stage already wrote; the API starts from an upload.
A listing's text is its title and description joined the same way everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from marketplace.data.images import clean_image

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ImagePreprocessing:
    """Canvas -> normalised tensor for one image backbone."""

    canvas_size: int  # the clean_images canvas (params clean_images.size)
    image_size: int  # the encoder's input side
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def from_canvas(self, canvas: Image.Image) -> torch.Tensor:
        """``[3, image_size, image_size]`` float tensor from an RGB canvas."""
        return self.normalise(self.pixels_from_canvas(canvas))

    def pixels_from_canvas(self, canvas: Image.Image) -> torch.Tensor:
        """``[3, image_size, image_size]`` uint8 pixels: the canvas at the encoder's size.

        Fine-tuning keeps photos in this compact form (augmenting them per batch) and
        normalises them with ``normalise``, so it sees exactly what ``from_canvas`` gives.
        """
        if canvas.mode != "RGB":
            canvas = canvas.convert("RGB")
        if canvas.size != (self.image_size, self.image_size):
            canvas = canvas.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy()).permute(2, 0, 1)

    def pixels_from_file(self, path: Path) -> torch.Tensor:
        """uint8 pixels of a canvas the ``clean_images`` stage wrote."""
        with Image.open(path) as image:
            return self.pixels_from_canvas(image.convert("RGB"))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., 3, H, W]`` -> float, scaled to [0, 1] and standardised per channel."""
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return ((pixels.float() / 255.0 - mean) / std).contiguous()

    def from_file(self, path: Path) -> torch.Tensor:
        """From a canvas the ``clean_images`` stage wrote."""
        with Image.open(path) as image:
            return self.from_canvas(image.convert("RGB"))

    def from_upload(self, data: bytes) -> torch.Tensor:
        """From raw image bytes (an upload): cleaned exactly like the stage, then as above.

        Raises ``marketplace.data.images.ImageError`` with a reason for bad input.
        """
        return self.from_canvas(clean_image(data, self.canvas_size))


def listing_text(title: str | None, description: str | None) -> str:
    """The text a model sees for a listing: ``"<title>. <description>"``, whitespace folded."""
    title = _WHITESPACE.sub(" ", title or "").strip()
    description = _WHITESPACE.sub(" ", description or "").strip()
    if title and description:
        return f"{title}. {description}"
    return title or description
