"""Hybrid index over provisions: FAISS dense vectors + BM25 over jieba tokens, fused with priors and
the bridge from a pack's principles to the articles they cite (`medes.retrieval.rerank`).

An index is a directory:
- `manifest.json` — embedder id and dim, corpus fingerprint, counts, pack ids, build/update times,
  medes version, and the passage recipe (it decides what the vectors mean: `passage_chars`, and
  `citing_passage_chars` for provisions that cite others; absent in older indexes, which read as
  `passage_chars`);
- `provisions.jsonl` — the `Provision` records, in vector order;
- `vectors.faiss` — exact inner product (`IndexFlatIP`) or HNSW for large corpora;
- `bm25_counts.npz` + `bm25_vocab.json` — term counts; BM25 weights are derived on load.

Opening an index with another embedder raises `IndexMismatchError`: vectors of two models are not
comparable, and silently mixing them would return plausible-looking wrong results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import sparse

from medes.records import Provision
from medes.retrieval.bm25 import BM25, tokenize
from medes.retrieval.embedders import Embedder, get_embedder
from medes.retrieval.rerank import RankConfig, bridge_scores, cite_links, fuse

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROVISIONS = "provisions.jsonl"
VECTORS = "vectors.faiss"
PASSAGE_CHARS = 64
"""Dense passages are cut to this many characters. e5's cost grows with length and an article's
subject and duty come first; the whole text still counts through BM25 (see docs/benchmarks.md).
0 embeds no article at all (only the citing provisions, for the bridge): a build in seconds, at a
small recall cost measured in docs/benchmarks.md."""
CITING_PASSAGE_CHARS = 256
"""Provisions that cite others (a pack's principles and summaries) are few and are the sources of the
bridge (`rerank.bridge_scores`): their whole statement is embedded, not just its start."""

FaissKind = Literal["flat", "hnsw"]


class IndexError_(RuntimeError):
    """Base of index errors (named with a trailing underscore: `IndexError` is a builtin)."""


class IndexNotFoundError(IndexError_, FileNotFoundError):
    """No index at the given directory."""


class IndexMismatchError(IndexError_, ValueError):
    """The index was built with another embedder (or an incompatible format)."""


@dataclass(frozen=True)
class Hit:
    provision: Provision
    score: float
    """Fused score (higher is better); comparable within one result list only."""
    rank: int
    """1-based."""
    dense_score: float
    """Cosine similarity of query and passage (0 for an article an index built with
    `passage_chars=0` did not embed)."""
    bm25_score: float


def short_title(title: str) -> str:
    return title.removeprefix("中华人民共和国")


def passage_text(p: Provision, max_chars: int = PASSAGE_CHARS) -> str:
    """What the dense model sees: the law's name for context, then the start of the article."""
    return f"{short_title(p.source.title)}：{p.text}"[:max_chars]


def lexical_text(p: Provision) -> str:
    """What BM25 sees: title, chapter headings and the whole article."""
    return " ".join([p.source.title, *p.path, p.text])


def _new_faiss(kind: FaissKind, dim: int):
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
        return index
    raise ValueError(f"unknown faiss kind {kind!r}; expected flat or hnsw")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class HybridIndex:
    """Provisions searchable by meaning (dense) and by words (BM25); see module docstring."""

    def __init__(
        self,
        provisions: list[Provision],
        embedder: Embedder,
        vectors,
        bm25: BM25,
        manifest: dict,
        config: RankConfig | None = None,
    ) -> None:
        self.provisions = provisions
        self.embedder = embedder
        self.vectors = vectors
        self.bm25 = bm25
        self.manifest = manifest
        self.config = config or RankConfig()
        self._by_id = {p.id: i for i, p in enumerate(provisions)}
        self._features = None
        self._bridge = None

    # ------------------------------------------------------------------ build / add / save / open

    @classmethod
    def build(
        cls,
        provisions: Sequence[Provision],
        embedder: Embedder | str | None = None,
        *,
        faiss_kind: FaissKind = "flat",
        passage_chars: int = PASSAGE_CHARS,
        packs: Iterable[str] = (),
        progress: Callable[[int], None] | None = None,
        batch_size: int = 64,
        config: RankConfig | None = None,
    ) -> HybridIndex:
        emb = embedder if embedder is not None and not isinstance(embedder, str) else get_embedder(embedder)
        manifest = {
            "format": FORMAT_VERSION,
            "embedder": emb.id,
            "dim": emb.dim,
            "faiss": faiss_kind,
            "passage_chars": passage_chars,
            "citing_passage_chars": max(passage_chars, CITING_PASSAGE_CHARS),
            "count": 0,
            "packs": [],
            "fingerprint": "",
            "built_at": _now(),
            "updated_at": _now(),
            "medes_version": _version(),
        }
        index = cls([], emb, _new_faiss(faiss_kind, emb.dim), BM25.build([]), manifest, config)
        index.add(provisions, packs=packs, progress=progress, batch_size=batch_size)
        return index

    def add(
        self,
        provisions: Sequence[Provision],
        *,
        packs: Iterable[str] = (),
        progress: Callable[[int], None] | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        """Embed and append provisions whose id is new; returns the ids it skipped as already present."""
        seen = set(self._by_id)
        new: list[Provision] = []
        skipped: list[str] = []
        for p in provisions:
            if p.id in seen:
                skipped.append(p.id)
                continue
            seen.add(p.id)
            new.append(p)
        chars = int(self.manifest["passage_chars"])
        # indexes built before the bridge have no such key: keep embedding as they were built
        citing_chars = int(self.manifest.get("citing_passage_chars", chars))
        for start in range(0, len(new), batch_size):
            batch = new[start : start + batch_size]
            # passage_chars 0: articles get no dense vector (a zero row keeps positions aligned)
            embed = [i for i, p in enumerate(batch) if p.cites or chars > 0]
            vecs = np.zeros((len(batch), self.embedder.dim), np.float32)
            if embed:
                texts = [passage_text(batch[i], citing_chars if batch[i].cites else chars) for i in embed]
                vecs[embed] = self.embedder.embed_passages(texts)
            self.vectors.add(np.ascontiguousarray(vecs, dtype=np.float32))
            if progress is not None:
                progress(len(batch))
        self.bm25.add([tokenize(lexical_text(p)) for p in new])
        for p in new:
            self._by_id[p.id] = len(self.provisions)
            self.provisions.append(p)
        from medes.retrieval.packs import fingerprint

        m = self.manifest
        m["count"] = len(self.provisions)
        m["packs"] = sorted(set(m["packs"]) | set(packs) | {p.pack for p in new if p.pack})
        m["fingerprint"] = fingerprint(self.provisions)
        m["updated_at"] = _now()
        m["medes_version"] = _version()
        self._features = None
        self._bridge = None
        return skipped

    def save(self, directory: Path) -> None:
        import faiss

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / PROVISIONS).open("w", encoding="utf-8") as f:
            for p in self.provisions:
                f.write(p.model_dump_json() + "\n")
        faiss.write_index(self.vectors, str(directory / VECTORS))
        self.bm25.save(directory)
        # manifest last: a directory with a manifest is a complete index
        (directory / MANIFEST).write_text(
            json.dumps(self.manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )

    @staticmethod
    def read_manifest(directory: Path) -> dict:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise IndexNotFoundError(
                f"no index at {directory} (missing {MANIFEST}); build one with "
                f"`medes index build --corpus DIR --out {directory}`"
            )
        return json.loads(path.read_text(encoding="utf-8"))

    @classmethod
    def open(
        cls, directory: Path, embedder: Embedder | str | None = None, config: RankConfig | None = None
    ) -> HybridIndex:
        """Load an index. `embedder` defaults to the one it was built with; another one is an error."""
        import faiss

        directory = Path(directory)
        manifest = cls.read_manifest(directory)
        if manifest.get("format") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{directory}: index format {manifest.get('format')!r}, this medes reads {FORMAT_VERSION}; rebuild it"
            )
        if embedder is None:
            embedder = manifest["embedder"]
        emb = get_embedder(embedder) if isinstance(embedder, str) else embedder
        if emb.id != manifest["embedder"] or emb.dim != manifest["dim"]:
            raise IndexMismatchError(
                f"{directory} was built with embedder {manifest['embedder']} (dim {manifest['dim']}); "
                f"cannot query it with {emb.id} (dim {emb.dim}). Rebuild the index or use its embedder."
            )
        with (directory / PROVISIONS).open(encoding="utf-8") as f:
            provisions = [Provision.model_validate_json(line) for line in f if line.strip()]
        vectors = faiss.read_index(str(directory / VECTORS))
        bm25 = BM25.load(directory)
        if not (len(provisions) == vectors.ntotal == bm25.n_docs == manifest["count"]):
            raise IndexMismatchError(
                f"{directory} is inconsistent: {len(provisions)} provisions, {vectors.ntotal} vectors, "
                f"{bm25.n_docs} BM25 rows, manifest count {manifest['count']}; rebuild it"
            )
        return cls(provisions, emb, vectors, bm25, manifest, config)

    # ------------------------------------------------------------------ lookup

    def __len__(self) -> int:
        return len(self.provisions)

    def __contains__(self, provision_id: object) -> bool:
        return provision_id in self._by_id

    def get(self, provision_id: str) -> Provision | None:
        """The provision with this id, or None (like `dict.get`; callers check grounding with it)."""
        i = self._by_id.get(provision_id)
        return None if i is None else self.provisions[i]

    def __getitem__(self, provision_id: str) -> Provision:
        provision = self.get(provision_id)
        if provision is None:
            raise KeyError(f"provision {provision_id!r} is not in the index")
        return provision

    def resolve(self, provision_ids: Iterable[str]) -> dict[str, Provision | None]:
        """Each id → its provision, or None when it does not resolve (for grounding checks)."""
        return {
            pid: (self.provisions[i] if (i := self._by_id.get(pid)) is not None else None)
            for pid in provision_ids
        }

    # ------------------------------------------------------------------ search

    def search(self, query: str, k: int = 5) -> list[Hit]:
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """Top-k hits per query; the queries are embedded in one batch."""
        if not queries:
            return []
        n = len(self.provisions)
        if n == 0:
            return [[] for _ in queries]
        dense = int(self.manifest["passage_chars"]) > 0
        bridged = bool(self.config.bridge_weight) and self.bridge[0].size > 0
        if dense or bridged:
            qvecs = np.ascontiguousarray(self.embedder.embed_queries(list(queries)), dtype=np.float32)
        else:  # a lexical index without bridge sources needs no query embedding
            qvecs = np.zeros((len(queries), self.embedder.dim), np.float32)
        if dense:
            depth = min(n, max(self.config.depth, k))
            dense_scores, dense_ids = self.vectors.search(qvecs, depth)
        else:
            dense_scores = np.zeros((len(queries), 0), np.float32)
            dense_ids = np.zeros((len(queries), 0), np.int64)
        bridge_sims = qvecs @ self.bridge[2].T if bridged else None
        results = []
        for qi, query in enumerate(queries):
            bm = self.bm25.scores(tokenize(query))
            bridge = None if bridge_sims is None else bridge_scores(bridge_sims[qi], self.bridge[1])
            ranked = fuse(
                dense_ids[qi], dense_scores[qi], bm, self.config, features=self.features, k=k, bridge=bridge
            )
            hits = []
            for rank, (i, score) in enumerate(ranked, start=1):
                cosine = float(self.vectors.reconstruct(int(i)) @ qvecs[qi])
                hits.append(Hit(self.provisions[i], float(score), rank, cosine, float(bm[i])))
            results.append(hits)
        return results

    @property
    def features(self):
        """Per-provision query-independent features for the priors (computed once, lazily)."""
        if self._features is None:
            from medes.retrieval.rerank import provision_features

            self._features = provision_features(self.provisions)
        return self._features

    @property
    def bridge(self) -> tuple[np.ndarray, sparse.csr_matrix, np.ndarray]:
        """(positions of the citing provisions, their links to what they cite, their vectors), for
        `rerank.bridge_scores`; computed once, lazily (the vectors are read back from FAISS)."""
        if self._bridge is None:
            sources, links = cite_links(self.provisions)
            vecs = np.stack([self.vectors.reconstruct(int(i)) for i in sources]) if sources.size else None
            self._bridge = (sources, links, vecs if vecs is not None else np.zeros((0, self.embedder.dim)))
        return self._bridge


def _version() -> str:
    from medes import __version__

    return __version__
