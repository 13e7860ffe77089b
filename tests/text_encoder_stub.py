"""A stand-in text encoder for tests: deterministic pseudo-random unit embeddings per string."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from geo3d.language.text import TextEncoder


class HashEncoder(TextEncoder):
    """Embeds each string as a fixed random vector seeded by its sha256 (``dim`` components; the base
    class normalises). Space ``"hash:test"``."""

    name = "hash"
    space = "hash:test"

    def __init__(self, dim: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dim = dim

    def _encode_batch(self, texts):
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            rows.append(torch.from_numpy(np.random.default_rng(seed).standard_normal(self.dim)).float())
        return torch.stack(rows)
