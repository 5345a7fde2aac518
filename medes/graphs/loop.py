"""Round drivers: `medes align` (one align run) and `medes loop` (generate → evaluate → align, repeated).

A loop round:
1. generate `n` scenarios (run `<loop>-r<k>-gen`); the planner weights scenes and norms by the
   guardian's failure statistics in the store (`Store.failure_stats`), so every round aims where the
   target model failed in the rounds before;
2. evaluate the target model on them into run `<loop>-r<k>` (answers + verdicts, leaderboard, report);
3. align into the same run: failing answers are revised with the guardian's feedback and re-judged;
   the evaluation's answers and verdicts are round 0 (reused by id, not asked again);
4. record the round's numbers: risk rate and final score of the model's own answers (before) and of
   the best-judged answer per scenario after revision (after), pairs, SFT rows, scenes planned.
The loop report (CSV + HTML) shows how these moved round after round. Every stage writes to the store
as it goes, and rerunning the same `--loop-id` resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import csv
import html
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medes.graphs.align import (
    DEFAULT_MAX_ROUNDS,
    DEFAULT_THRESHOLD,
    AlignContext,
    AlignOutcome,
    run_align,
    summarize,
)
from medes.records import Scenario
from medes.settings import Settings
from medes.store import Store


@dataclass(frozen=True)
class AlignJob:
    """Who answers, judges and revises, and when an answer passes. Stored in the run manifest."""

    model: str | None = None
    """Spec of the model being aligned (None: the configured default)."""
    judge: str | None = None
    """Spec of the guardian's LLM judge (None: MEDES_JUDGE_LLM, else the default)."""
    reviser: str | None = None
    """Spec of the reviser (None: the model itself revises its answer: self-correction)."""
    revise_style: str = "outline"
    """`outline` (rubric fields under structured output; code writes the citations) or `free` text."""
    rounds: int = DEFAULT_MAX_ROUNDS
    threshold: float = DEFAULT_THRESHOLD
    k: int = 5
    concurrency: int = 4
    min_confidence: float = 0.7


def checkpoint_path(store_path: Path) -> Path:
    """One checkpoint file beside the store, shared with generation (thread ids never collide)."""
    return store_path.with_name(f"{store_path.stem}.checkpoints.sqlite")


@dataclass
class Agents:
    """The built models for a job (built once, reused every round)."""

    responder: Any
    guardian: Any
    reviser: Any
    judge_id: str

    @property
    def model_id(self) -> str:
        return self.responder.model_id


def build_agents(job: AlignJob, settings: Settings, ledger: Any) -> Agents:
    from medes.agents.guardian import Cascade, LLMJudge
    from medes.agents.responder import Responder
    from medes.agents.reviser import Reviser
    from medes.llm import get_llm

    def llm(spec: str | None) -> Any:
        return get_llm(spec, settings=settings, ledger=ledger)

    model = llm(job.model)
    reviser = model if job.reviser in (None, job.model) else llm(job.reviser)
    judge = llm(job.judge or settings.judge_llm or None)
    return Agents(
        responder=Responder(model),
        guardian=Cascade(LLMJudge(judge), None, job.min_confidence),
        reviser=Reviser(reviser, job.revise_style),
        judge_id=judge.id,
    )


def resolve_scenarios(store: Store, source: str) -> tuple[list[Scenario], str]:
    """Scenarios from a file (MedES CSV/JSONL or Scenario JSONL), a generate run, or the scenarios an
    earlier run (e.g. an evaluation) answered. Returns (subjective scenarios, source label)."""
    from medes.graphs.evaluate import load_scenarios

    path = Path(source)
    if path.is_file():
        found, label = load_scenarios(path), str(path)
    else:
        found, label = store.scenarios(run_id=source), f"run:{source}"
        if not found:
            ids = sorted({r.scenario_id for r in store.responses(run_id=source)})
            found = [s for s in (store.scenario(i) for i in ids) if s is not None]
        if not found:
            raise LookupError(
                f"{source!r} is neither a scenario file nor a run with scenarios in {store.path}"
            )
    subjective = [s for s in found if s.kind == "subjective"]
    if not subjective:
        raise LookupError(f"no subjective scenarios in {label}")
    return subjective, label


def align_manifest(
    job: AlignJob, agents: Agents, source: str, settings: Settings, **extra: Any
) -> dict[str, Any]:
    from medes.graphs.generate import git_sha
    from medes.prompts import prompt_hash

    return {
        "source": source,
        "job": asdict(job),
        "model_ids": [agents.model_id, agents.reviser.model_id, agents.judge_id],
        "prompt_hashes": {
            name: prompt_hash(name) for name in ("respond", "judge", "revise", "revise_outline")
        },
        "git_sha": git_sha(),
        "settings": settings.public_dict(),
        **extra,
    }


def start_align_run(store: Store, run_id: str, manifest: dict[str, Any]) -> None:
    """Register the run; resuming it with different pass rules would mix two experiments, so refuse."""
    if store.start_run(run_id, "align", manifest):
        return
    previous = store.run(run_id) or {}
    old = previous.get("manifest", {}).get("job")
    new = manifest["job"]
    if old is not None:
        keys = ("model", "rounds", "threshold", "revise_style")
        if any(old.get(key) != new.get(key) for key in keys):
            raise ValueError(
                f"run {run_id} was started with "
                + ", ".join(f"{key}={old.get(key)!r}" for key in keys)
                + "; use another --out-run for different settings"
            )


def align_scenarios(
    store: Store,
    scenarios: Sequence[Scenario],
    *,
    run_id: str,
    job: AlignJob,
    agents: Agents,
    index: Any,
    checkpoint: Path,
    on_done: Callable[[AlignOutcome], None] | None = None,
    run: Callable[[Any], Any] = asyncio.run,
) -> dict[str, Any]:
    """Run the align graph over `scenarios` into run `run_id` and return its summary (also stored).

    `run` runs the coroutine: `asyncio.run`, or a long-lived `asyncio.Runner.run` when the models'
    clients must stay on one event loop across calls.
    """
    context = AlignContext(
        store=store,
        responder=agents.responder,
        guardian=agents.guardian,
        reviser=agents.reviser,
        index=index,
        k=job.k,
        judge_id=agents.judge_id,
    )
    outcomes = run(
        run_align(
            scenarios,
            run_id=run_id,
            context=context,
            checkpoint_path=checkpoint,
            max_rounds=job.rounds,
            threshold=job.threshold,
            concurrency=job.concurrency,
            on_done=on_done,
        )
    )
    summary = summarize(store, run_id, outcomes)
    summary["ledger"] = _ledger_totals(store, run_id)
    store.finish_run(run_id, summary, status="partial" if summary["status"]["failed"] else "done")
    return summary


def _ledger_totals(store: Store, run_id: str) -> dict[str, Any]:
    entries = store.ledger(run_id)
    by_node = Counter(e["node"] for e in entries)
    return {
        "calls": len(entries),
        "by_node": dict(by_node),
        "failures": sum(e["outcome"] != "ok" for e in entries),
        "prompt_tokens": sum(e["prompt_tokens"] for e in entries),
        "completion_tokens": sum(e["completion_tokens"] for e in entries),
        "latency_s": round(sum(e["latency_s"] for e in entries), 1),
    }


# ------------------------------------------------------------------------------------------ the loop


@dataclass
class RoundResult:
    round: int
    generate_run: str
    align_run: str
    scenarios: int
    planned_scenes: dict[str, int]
    before: dict[str, Any]
    after: dict[str, Any]
    pairs: int
    sft_rows: int
    revisions: int
    failed: int
    elapsed_s: float
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class LoopResult:
    loop_id: str
    rounds: list[RoundResult]
    out_dir: Path
    outputs: dict[str, str]


ROUND_COLUMNS = (
    "round",
    "generate_run",
    "align_run",
    "scenarios",
    "risk_rate_before",
    "final_score_before",
    "risk_rate_after",
    "final_score_after",
    "pairs",
    "sft_rows",
    "revisions",
    "failed",
    "elapsed_s",
)


def round_row(r: RoundResult) -> dict[str, Any]:
    return {
        "round": r.round,
        "generate_run": r.generate_run,
        "align_run": r.align_run,
        "scenarios": r.scenarios,
        "risk_rate_before": _round(r.before.get("risk_rate")),
        "final_score_before": _round(r.before.get("final_score")),
        "risk_rate_after": _round(r.after.get("risk_rate")),
        "final_score_after": _round(r.after.get("final_score")),
        "pairs": r.pairs,
        "sft_rows": r.sft_rows,
        "revisions": r.revisions,
        "failed": r.failed,
        "elapsed_s": r.elapsed_s,
    }


def run_loop(
    rounds: int,
    n: int,
    *,
    job: AlignJob,
    settings: Settings,
    loop_id: str,
    llm: str | None = None,
    store_path: Path | None = None,
    index_dir: Path | None = None,
    out_dir: Path | None = None,
    scenes: Sequence[str] | None = None,
    mutations: int = 2,
    log: Callable[[str], None] = lambda message: None,
) -> LoopResult:
    """`rounds` × (generate `n` → evaluate → align → record); resumable by `loop_id`."""
    import time

    from medes.agents.responder import Responder
    from medes.graphs.evaluate import EvaluateContext, run_evaluation
    from medes.graphs.generate import GenerateRequest, open_generation_index, run_generate
    from medes.llm import TokenLedger
    from medes.records import MEDES_SCENES

    if rounds < 1 or n < 1:
        raise ValueError(f"need --rounds ≥ 1 and -n ≥ 1, got {rounds}, {n}")
    store_path = store_path or settings.resolved_store_path()
    out_dir = out_dir or settings.home / "loops" / loop_id
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint_path(store_path)
    results: list[RoundResult] = []
    with Store(store_path) as store, asyncio.Runner() as runner:
        agents = build_agents(job, settings, TokenLedger(sink=store.ledger_sink))
        if not isinstance(agents.responder, Responder):  # pragma: no cover - build_agents makes one
            raise TypeError("the loop needs a Responder")
        index = open_generation_index(index_dir, settings)
        for k in range(1, rounds + 1):
            started = time.perf_counter()
            gen_run, align_run = f"{loop_id}-r{k}-gen", f"{loop_id}-r{k}"
            log(f"round {k}/{rounds}: generate {n} scenarios ({gen_run})")
            request = GenerateRequest(
                n=n, scenes=tuple(scenes or MEDES_SCENES), mutations=mutations, k=job.k, seed=settings.seed
            )
            gen = run_generate(
                request,
                run_id=gen_run,
                llm_spec=llm,
                store_path=store_path,
                index_dir=index_dir,
                concurrency=job.concurrency,
            )
            manifest = store.run(gen_run) or {}
            planned = Counter(item["scene"] for item in manifest.get("manifest", {}).get("plan", []))
            scenarios = [s for s in store.scenarios(run_id=gen_run) if s.kind == "subjective"]
            if not scenarios:
                raise RuntimeError(
                    f"round {k}: generation accepted no subjective scenario "
                    f"(rejections: {gen.summary.get('rejections')}); see run {gen_run}"
                )
            round_dir = out_dir / f"round-{k}"
            start_align_run(
                store,
                align_run,
                align_manifest(job, agents, f"run:{gen_run}", settings, loop_id=loop_id, round=k),
            )
            log(f"round {k}: evaluate {agents.model_id} on {len(scenarios)} scenarios ({align_run})")
            evaluation = runner.run(
                run_evaluation(
                    scenarios,
                    run_id=align_run,
                    context=EvaluateContext(
                        store=store,
                        responders={agents.model_id: agents.responder},
                        guardian=agents.guardian,
                        index=index,
                        k=job.k,
                        out_dir=round_dir / "evaluate",
                        summarize=lambda db, run, out: {
                            "outputs": run_report(db, run, out, f"{run}: the model's own answers")
                        },
                    ),
                    checkpoint_path=checkpoint,
                )
            )
            log(f"round {k}: align (≤ {job.rounds} revisions, pass at final ≥ {job.threshold})")
            summary = align_scenarios(
                store,
                scenarios,
                run_id=align_run,
                job=job,
                agents=agents,
                index=index,
                checkpoint=checkpoint,
                run=runner.run,
            )
            outputs = {
                "evaluation": evaluation.get("summary", {}).get("outputs", {}).get("report", ""),
                **run_report(store, align_run, round_dir / "align", f"{align_run}: answers and revisions"),
            }
            result = RoundResult(
                round=k,
                generate_run=gen_run,
                align_run=align_run,
                scenarios=len(scenarios),
                planned_scenes=dict(planned),
                before=summary["before"],
                after=summary["after"],
                pairs=summary["pairs"],
                sft_rows=summary["sft_rows"],
                revisions=summary["revisions"],
                failed=summary["status"]["failed"],
                elapsed_s=round(time.perf_counter() - started, 1),
                outputs={key: value for key, value in outputs.items() if value},
            )
            results.append(result)
            log(
                f"round {k}: risk rate {_fmt(result.before.get('risk_rate'))} → {_fmt(result.after.get('risk_rate'))}, "
                f"final {_fmt(result.before.get('final_score'))} → {_fmt(result.after.get('final_score'))}, "
                f"{result.pairs} pairs, {result.sft_rows} SFT rows"
            )
        stats = store.failure_stats()
    outputs = write_loop_report(loop_id, results, stats, out_dir)
    return LoopResult(loop_id, results, out_dir, outputs)


def run_report(store: Store, run_id: str, out_dir: Path, title: str) -> dict[str, str]:
    """The run's MedES report (medes.report: HTML + CSVs). After align, the leaderboard has a row for the
    model's own answers and one for `revise:<model>` (the revisions of its failing answers)."""
    from medes import report

    judgments = store.judgments(run_id=run_id)
    if not judgments:
        return {}
    scenarios = [s for s in (store.scenario(i) for i in sorted({j.scenario_id for j in judgments})) if s]
    files = report.write_report(judgments, store.responses(run_id=run_id), scenarios, out_dir, title=title)
    return {"report": str(files.html), "leaderboard": str(files.leaderboard)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}"


# ------------------------------------------------------------------------------------------ report


def write_loop_report(
    loop_id: str,
    results: Sequence[RoundResult],
    failure_stats: dict[str, dict[str, dict[str, int]]],
    out_dir: Path,
) -> dict[str, str]:
    """rounds.csv, scenes.csv (planned items and guardian failures per scene and round), loop.json and
    report.html with the per-round trend."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [round_row(r) for r in results]
    rounds_csv = out_dir / "rounds.csv"
    with rounds_csv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROUND_COLUMNS)
        writer.writeheader()
        writer.writerows({c: "" if row[c] is None else row[c] for c in ROUND_COLUMNS} for row in rows)
    scenes = sorted({s for r in results for s in r.planned_scenes} | set(failure_stats.get("scene", {})))
    scenes_csv = out_dir / "scenes.csv"
    with scenes_csv.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["scene", *[f"planned_r{r.round}" for r in results], "judged", "failed"])
        for scene in scenes:
            stat = failure_stats.get("scene", {}).get(scene, {})
            writer.writerow(
                [
                    scene,
                    *[r.planned_scenes.get(scene, 0) for r in results],
                    stat.get("judged", 0),
                    stat.get("failed", 0),
                ]
            )
    data = {"loop_id": loop_id, "rounds": [asdict(r) for r in results], "failure_stats": failure_stats}
    loop_json = out_dir / "loop.json"
    loop_json.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    report = out_dir / "report.html"
    report.write_text(_html(loop_id, results, rows, scenes, failure_stats, out_dir), encoding="utf-8")
    return {
        "rounds": str(rounds_csv),
        "scenes": str(scenes_csv),
        "json": str(loop_json),
        "report": str(report),
    }


def _svg_trend(rows: Sequence[dict[str, Any]], key: str, title: str, lo: float, hi: float) -> str:
    """A small inline SVG line chart of before/after per round (no plotting library needed)."""
    w, h, pad = 360, 180, 30
    n = len(rows)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + (w - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)
        y = h - pad - (h - 2 * pad) * ((v - lo) / (hi - lo))
        return x, y

    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">']
    parts.append(f'<text x="{pad}" y="16" font-size="12">{html.escape(title)}</text>')
    parts.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>')
    for which, color in (("before", "#c0392b"), ("after", "#27ae60")):
        pts = [xy(i, r[f"{key}_{which}"]) for i, r in enumerate(rows) if r[f"{key}_{which}"] is not None]
        if pts:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                + '"/>'
            )
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
    for i, r in enumerate(rows):
        x, _ = xy(i, lo)
        parts.append(
            f'<text x="{x:.1f}" y="{h - 10}" font-size="11" text-anchor="middle">r{r["round"]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _html(
    loop_id: str,
    results: Sequence[RoundResult],
    rows: Sequence[dict[str, Any]],
    scenes: Sequence[str],
    failure_stats: dict[str, dict[str, dict[str, int]]],
    out_dir: Path,
) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return html.escape("–" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in ROUND_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(row[c])}</td>" for c in ROUND_COLUMNS) + "</tr>" for row in rows
    )
    scene_head = "".join(f"<th>planned r{r.round}</th>" for r in results)
    scene_rows = ""
    for scene in scenes:
        stat = failure_stats.get("scene", {}).get(scene, {})
        planned = "".join(f"<td>{r.planned_scenes.get(scene, 0)}</td>" for r in results)
        scene_rows += (
            f"<tr><td>{html.escape(scene)}</td>{planned}<td>{stat.get('judged', 0)}</td>"
            f"<td>{stat.get('failed', 0)}</td></tr>"
        )
    links = "".join(
        f'<li>round {r.round}: <a href="{html.escape(os.path.relpath(r.outputs[key], out_dir))}">'
        f"{label}</a></li>"
        for r in results
        for key, label in (
            ("evaluation", "evaluation (own answers)"),
            ("report", "after alignment (with revisions)"),
        )
        if key in r.outputs
    )
    return f"""<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>medes loop {html.escape(loop_id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head>
<body><h1>Guardian-in-the-loop: {html.escape(loop_id)}</h1>
<p>Each round generates scenarios weighted toward the scenes and norms where the guardian saw failures,
evaluates the target model (<em>before</em>: its own answers), then revises failing answers with the
guardian's feedback (<em>after</em>: the best-judged answer per scenario; passing ones are the SFT/DPO material).</p>
{_svg_trend(rows, "risk_rate", "risk rate (red: before, green: after)", 0.0, 1.0)}
{_svg_trend(rows, "final_score", "final score (red: before, green: after)", -1.0, 1.0)}
<h2>Rounds</h2><table><tr>{head}</tr>{body}</table>
<h2>Steering: items planned per scene, guardian failures so far</h2>
<table><tr><th>scene</th>{scene_head}<th>judged</th><th>failed</th></tr>{scene_rows}</table>
<h2>Per-round evaluation reports</h2><ul>{links}</ul>
</body></html>
"""
