"""Benchmark: multiple-choice accuracy of a model with and without retrieved provisions.

Sets (read from ../shared, never bundled): MedEthicEval knowledge (single answer, 5 options),
SafetyBench zh health/ethics slice (single answer, 2–4 options) and the MedES objective sample
(multi-select, exact letter-set match). Each item is answered twice through `answer_mcq` (letter-
enum constrained output): once bare, once with the top-k provisions retrieved for the question
and its options. The same fixed-seed subsample is used for both conditions (a paired design).

Answers are cached per (set, item, condition, model, k) in a JSONL file, so an interrupted run
resumes where it stopped. Prints a markdown table (n, accuracy, Wilson 95 % CI, chance level,
paired wins/losses) and writes the numbers as JSON.

    python bench/ask.py --llm llamacpp:/root/.cache/medes/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \\
        --n 60 --seed 0 -k 3 [--index DIR]

Without `--index` the built-in pack is searched with an in-process BM25 (jieba tokens): the
product's hybrid index is the better retriever, this is the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medes import benchdata  # noqa: E402
from medes.graphs.ask import answer_mcq  # noqa: E402
from medes.llm import get_llm  # noqa: E402
from medes.records import Provision  # noqa: E402

SHARED = REPO.parent / "shared"
SETS = {
    "medethiceval": (benchdata.MEDETHICEVAL_KNOWLEDGE, benchdata.load_medethiceval_knowledge, False),
    "safetybench": (benchdata.SAFETYBENCH_ZH, benchdata.load_safetybench, False),
    "medes-objective": (benchdata.MEDES_OBJECTIVE, benchdata.load_medes_objective, True),
}


@dataclass
class Hit:
    provision: Provision
    score: float
    rank: int


class BM25Retriever:
    """Floor retriever for the bench when no hybrid index is given: BM25 over jieba tokens."""

    def __init__(self, provisions: list[Provision]):
        import jieba
        from rank_bm25 import BM25Okapi

        jieba.setLogLevel(60)
        self._cut = lambda text: [t for t in jieba.lcut(text) if t.strip()]
        self.provisions = provisions
        self.bm25 = BM25Okapi([self._cut(f"{p.source.title} {p.text}") for p in provisions])

    def search(self, query: str, k: int) -> list[Hit]:
        scores = self.bm25.get_scores(self._cut(query))
        best = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        return [Hit(self.provisions[i], float(scores[i]), r + 1) for r, i in enumerate(best)]


def open_retriever(index: Path | None):
    if index is not None:
        from medes.retrieval.index import HybridIndex

        return HybridIndex.open(index), f"hybrid:{index}"
    from medes.retrieval.packs import builtin_pack_dir, load_corpus

    return BM25Retriever(load_corpus([builtin_pack_dir()]).provisions), "bm25:builtin-pack"


N_CTX = 2048


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def chance(item: benchdata.McqItem, multi: bool) -> float:
    n = len(item.options)
    return 1 / (2**n - 1) if multi else 1 / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", required=True)
    ap.add_argument("--n", type=int, default=60, help="items per set (fixed-seed subsample; 0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--provision-chars", type=int, default=200, help="provision text shown per hit")
    ap.add_argument("--index", type=Path, default=None)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/medes-cache/bench_ask.jsonl"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/medes-cache/bench_ask_results.json"))
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    ap.add_argument("--report-only", action="store_true", help="summarize the cache, ask nothing")
    args = ap.parse_args()

    # temperature 0: a benchmark answer must not depend on sampling luck
    local = {"n_ctx": N_CTX, "n_threads": args.threads} if (args.llm or "").startswith("llamacpp:") else {}
    llm = get_llm(args.llm, parse_retries=1, temperature=0.0, max_tokens=64, **local)
    retriever, retriever_id = open_retriever(args.index)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    if args.cache.exists():
        for line in args.cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    cache = args.cache.open("a", encoding="utf-8")

    samples: dict[str, tuple[list, bool, int]] = {}
    for name in args.sets.split(","):
        rel, loader, multi = SETS[name]
        items = loader(SHARED / rel)
        sample = (
            items if args.n == 0 or args.n >= len(items) else random.Random(args.seed).sample(items, args.n)
        )
        samples[name] = (sample, multi, len(items))

    def key(name: str, item: benchdata.McqItem, cond: str) -> str:
        where = retriever_id if cond == "retrieval" else ""
        return f"{name}|{item.id}|{cond}|{llm.id}|k={args.k}|c={args.provision_chars}|{where}"

    # round-robin over the sets, so a run cut short still covers every set evenly
    started, asked = time.perf_counter(), 0
    for i in range(max(len(s[0]) for s in samples.values())):
        for name, (sample, multi, _) in samples.items():
            if i >= len(sample) or args.report_only:
                continue
            item = sample[i]
            for cond in ("none", "retrieval"):
                if key(name, item, cond) in done:
                    continue
                provisions = []
                if cond == "retrieval":
                    query = item.question + "\n" + "\n".join(item.options.values())
                    provisions = [h.provision for h in retriever.search(query, args.k)]
                t0 = time.perf_counter()
                ans = asyncio.run(
                    answer_mcq(
                        llm,
                        item.question,
                        item.options,
                        multi=multi,
                        provisions=provisions,
                        provision_chars=args.provision_chars,  # short grounding: 0.5B context and speed
                    )
                )
                row = {
                    "key": key(name, item, cond),
                    "letters": ans.letters,
                    "answer": item.answer,
                    "error": ans.error,
                    "latency_s": round(time.perf_counter() - t0, 2),
                    "provisions": [p.id for p in provisions],
                }
                cache.write(json.dumps(row, ensure_ascii=False) + "\n")
                cache.flush()
                done[row["key"]] = row
                asked += 1
        if (i + 1) % 5 == 0:
            print(f"round {i + 1}: {asked} calls, {time.perf_counter() - started:.0f}s", file=sys.stderr)

    results = {}
    latencies = [r["latency_s"] for r in done.values() if r["key"].split("|")[3] == llm.id]
    for name, (sample, multi, total) in samples.items():
        # only items answered in both conditions count (paired); a cut-short run reports what it has
        paired = [it for it in sample if key(name, it, "none") in done and key(name, it, "retrieval") in done]
        n = len(paired)
        if n == 0:
            continue
        per_cond = {
            c: [done[key(name, it, c)]["letters"] == it.answer for it in paired]
            for c in ("none", "retrieval")
        }
        unanswered = {
            c: sum(not done[key(name, it, c)]["letters"] for it in paired) for c in ("none", "retrieval")
        }
        a, b = per_cond["none"], per_cond["retrieval"]
        results[name] = {
            "n": n,
            "of": total,
            "chance": sum(chance(it, multi) for it in paired) / n,
            "multi": multi,
            **{
                cond: {
                    "correct": sum(v),
                    "accuracy": sum(v) / n,
                    "ci95": wilson(sum(v), n),
                    "unanswered": unanswered[cond],
                }
                for cond, v in per_cond.items()
            },
            "retrieval_only_right": sum(y and not x for x, y in zip(a, b, strict=True)),
            "retrieval_only_wrong": sum(x and not y for x, y in zip(a, b, strict=True)),
        }
    cache.close()
    meta = {
        "median_latency_s": statistics.median(latencies) if latencies else None,
        "llm": llm.id,
        "k": args.k,
        "provision_chars": args.provision_chars,
        "seed": args.seed,
        "retriever": retriever_id,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"meta": meta, "results": results}, ensure_ascii=False, indent=2), encoding="utf-8"
    )

    print(
        f"model {llm.id}; retriever {retriever_id}, k={args.k}; seed {args.seed}; median {meta['median_latency_s']} s/answer"
    )
    print("| set | n (of) | chance | no retrieval | with retrieval | fixed / broken by retrieval |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        cells = []
        for cond in ("none", "retrieval"):
            c = r[cond]
            lo, hi = c["ci95"]
            cells.append(f"{c['accuracy']:.1%} [{lo:.1%}, {hi:.1%}]")
        print(
            f"| {name}{' (exact set)' if r['multi'] else ''} | {r['n']} ({r['of']}) | {r['chance']:.1%} | "
            f"{cells[0]} | {cells[1]} | +{r['retrieval_only_right']} / −{r['retrieval_only_wrong']} |"
        )
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
