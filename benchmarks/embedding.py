"""The 50 KB endpoint's computation: a deterministic text embedding of 4,000 floats, and its JSON bytes.

`Embedder` is a fixed random network (seeded, so every process computes the same numbers): the text's
character trigrams are hashed to rows of a token table, run through two dense layers and averaged. On one
core it costs a few milliseconds a call, like a small real embedding model; its JSON is about 50 KB.
"""

from __future__ import annotations

import zlib
from urllib.parse import quote

import numpy as np
from pydantic import BaseModel

DIMENSIONS = 4000
EMBED_TEXT = "redis cache middleware"
EMBED_PATH = f"/embed?text={quote(EMBED_TEXT)}"

_VOCABULARY, _WIDTH, _HIDDEN = 4096, 256, 512


class Embedding(BaseModel):
    """What `GET /embed` returns."""

    embedding: list[float]


class Embedder:
    """`embedder(text)` -> DIMENSIONS floats rounded to 9 decimals; the same text gives the same list."""

    def __init__(self, seed: int = 15) -> None:
        rng = np.random.default_rng(seed)
        self.table = rng.standard_normal((_VOCABULARY, _WIDTH))
        self.hidden = rng.standard_normal((_WIDTH, _HIDDEN)) / np.sqrt(_WIDTH)
        self.out = rng.standard_normal((_HIDDEN, DIMENSIONS)) / np.sqrt(_HIDDEN)

    def __call__(self, text: str) -> list[float]:
        padded = f"  {text}  "
        ids = [zlib.crc32(padded[i : i + 3].encode()) % _VOCABULARY for i in range(len(padded) - 2)]
        hidden = np.tanh(self.table[ids] @ self.hidden)
        pooled = np.tanh(hidden @ self.out).mean(axis=0)
        values: list[float] = np.round(pooled, 9).tolist()
        return values


def embedding_json(values: list[float]) -> bytes:
    """The bytes FastAPI sends for an endpoint returning `Embedding(embedding=values)`."""
    return Embedding(embedding=values).model_dump_json().encode()


def expected_body(text: str = EMBED_TEXT) -> bytes:
    """The 50 KB endpoint's answer to `text`, as every scenario of the 50 KB group must send it."""
    return embedding_json(Embedder()(text))
