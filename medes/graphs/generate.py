"""The generation graph that grows MedES: retrieve → draft → gate → mutate (fan-out) → gate → dedup → store.

Planning is run-level (`medes.agents.planner.plan`): its items are stored in the run manifest and
each one runs as its own LangGraph thread `"{run_id}:{index}"` with a SQLite checkpointer, so a
killed run resumes where it stopped: finished threads are skipped, unfinished ones continue from
their last checkpoint (finished `Send` branches keep their writes), no finished LLM step is asked
again, and content-derived ids plus the idempotent store mean nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy, Send

from medes.agents import gates
from medes.agents.drafter import ScenarioParts, draft, draft_instructions
from medes.agents.mutator import mutate, mutate_instructions
from medes.agents.planner import PlanItem, provision_brief
from medes.graphs import run_thread
from medes.graphs.checkpointer import inline_sqlite_saver
from medes.graphs.generate_state import (
    GenerateContext,
    GenerateInput,
    GenerateOutput,
    GenerateState,
    MutateTask,
)
from medes.llm import TransientLLMError
from medes.prompts import prompt_hash
from medes.records import Provenance, RetrievalHit, Scenario

RETRY = RetryPolicy(
    max_attempts=3, initial_interval=1.0, retry_on=(TransientLLMError, sqlite3.OperationalError)
)
"""Transient failures that survived the LLM layer's own backoff, or a locked SQLite file."""


def thread_id(run_id: str, index: int) -> str:
    return f"{run_id}:{index}"


def _item(state: GenerateState | MutateTask) -> PlanItem:
    return PlanItem.model_validate(state["item"])


def _reject(
    ctx: GenerateContext, run_id: str, item_id: str, stage: str, reason: str, detail: str = ""
) -> dict[str, str]:
    ctx.store.add_gate_event(run_id, item_id, stage, False, reason, detail)
    return {"item": item_id, "stage": stage, "reason": reason}


def _raise_if_transient(error: str) -> None:
    if error.startswith("transport:"):
        raise TransientLLMError(error)


# ------------------------------------------------------------------------------------------- nodes


async def retrieve(state: GenerateState, runtime: Runtime[GenerateContext]) -> dict[str, Any]:
    """Provisions for the item: the seed norm first, then what the index finds for scene + seed."""
    ctx, item = runtime.context, _item(state)
    seed = ctx.index.get(item.seed_norm)
    if seed is None:
        raise LookupError(f"seed norm {item.seed_norm!r} is not in the index (plan and index disagree)")
    query = f"{item.scene} {seed.text[:200]}"
    found = ctx.searches.get((query, ctx.k + 1))
    if found is None:
        found = ctx.searches[(query, ctx.k + 1)] = await asyncio.to_thread(ctx.index.search, query, ctx.k + 1)
    ids = [seed.id] + [h.provision.id for h in found if h.provision.id != seed.id]
    scores = {h.provision.id: float(h.score) for h in found}
    hits = [
        RetrievalHit(provision_id=pid, score=scores.get(pid, 1.0), rank=rank).model_dump(mode="json")
        for rank, pid in enumerate(ids[: ctx.k])
    ]
    return {"hits": hits}


async def draft_node(state: GenerateState, runtime: Runtime[GenerateContext]) -> dict[str, Any]:
    ctx, item, run_id = runtime.context, _item(state), state["run_id"]
    provisions = [p for h in state["hits"] if (p := ctx.index.get(h["provision_id"])) is not None]
    scenario, parts, raw, prompt, error = await draft(
        ctx.llm,
        scene=item.scene,
        kind=item.kind,  # type: ignore[arg-type]
        provisions=provisions,
        briefs=[provision_brief(p) for p in provisions],
        speaker=item.speaker,
        setting=item.setting,
        run_id=run_id,
    )
    if scenario is None:
        _raise_if_transient(error)
        rejection = _reject(
            ctx, run_id, thread_id(run_id, item.index), "draft", "parse_error", f"{error}\nraw: {raw[:2000]}"
        )
        return {"draft": None, "parts": None, "rejections": [rejection]}
    scenario.provenance = Provenance(
        run_id=run_id,
        node="draft",
        model_ids=[ctx.llm.id],
        prompt_hashes={"draft": prompt.hash},
        retrieval=[RetrievalHit.model_validate(h) for h in state["hits"]],
    )
    return {
        "draft": scenario.model_dump(mode="json"),
        "parts": parts.model_dump() if parts else None,
    }


def _gate(
    ctx: GenerateContext,
    state: GenerateState,
    scenario: Scenario,
    stage: str,
    parent: Scenario | None = None,
    instructions: str = "",
) -> list[gates.GateFailure]:
    cited = {n: ctx.index.get(n) for n in scenario.norm_ids}
    failures = gates.check(
        scenario,
        retrieved_ids=[h["provision_id"] for h in state["hits"]],
        resolve=cited,
        config=ctx.gates,
        parent=parent,
        instructions=instructions,
    )
    if not failures:
        ctx.store.add_gate_event(state["run_id"], scenario.id, stage, True)
    return failures


async def gate_draft(state: GenerateState, runtime: Runtime[GenerateContext]) -> dict[str, Any]:
    if state.get("draft") is None:
        return {"draft_ok": False}
    ctx, run_id = runtime.context, state["run_id"]
    scenario, item = Scenario.model_validate(state["draft"]), _item(state)
    told = draft_instructions(item.scene, item.kind, speaker=item.speaker, setting=item.setting)
    failures = _gate(ctx, state, scenario, "gate_draft", instructions=told)
    rejections = [_reject(ctx, run_id, scenario.id, "gate_draft", f.reason, f.detail) for f in failures]
    return {"draft_ok": not failures, "rejections": rejections}


async def mutate_node(task: MutateTask, runtime: Runtime[GenerateContext]) -> dict[str, Any]:
    """One operator applied to the draft (one `Send` branch)."""
    ctx, run_id = runtime.context, task["run_id"]
    parent = Scenario.model_validate(task["draft"])
    parts = ScenarioParts.model_validate(task["parts"]) if task["parts"] else None
    child, raw, prompt, error = await mutate(
        ctx.llm, parent=parent, parts=parts, operator=task["operator"], run_id=run_id
    )
    if child is None:
        _raise_if_transient(error)
        item_id = f"{parent.id}+{task['operator']}"
        return {
            "rejections": [
                _reject(ctx, run_id, item_id, "mutate", "parse_error", f"{error}\nraw: {raw[:2000]}")
            ]
        }
    child.provenance = Provenance(
        run_id=run_id,
        node="mutate",
        model_ids=[ctx.llm.id],
        prompt_hashes={**parent.provenance.prompt_hashes, "mutate": prompt.hash},
        retrieval=parent.provenance.retrieval,
    )
    return {"mutants": [child.model_dump(mode="json")]}


async def gate_mutants(state: GenerateState, runtime: Runtime[GenerateContext]) -> dict[str, Any]:
    ctx, run_id = runtime.context, state["run_id"]
    parent = Scenario.model_validate(state["draft"])
    ok: list[dict[str, Any]] = []
    rejections: list[dict[str, str]] = []
    for dump in state.get("mutants", []):
        child = Scenario.model_validate(dump)
        told = mutate_instructions(child.attack[-1]) if child.attack else ""
        failures = _gate(ctx, state, child, "gate_mutant", parent=parent, instructions=told)
        rejections += [_reject(ctx, run_id, child.id, "gate_mutant", f.reason, f.detail) for f in failures]
        if not failures:
            ok.append(dump)
    return {"mutants_ok": ok, "rejections": rejections}


async def dedup(state: GenerateState, runtime: Runtime[GenerateContext]) -> dict[str, Any]:
    """Drop near-duplicates of stored or already-accepted scenarios; a rejected draft takes its children."""
    ctx, run_id = runtime.context, state["run_id"]
    accepted: list[dict[str, Any]] = []
    rejections: list[dict[str, str]] = []
    root_ok = False
    for dump in [state["draft"], *state.get("mutants_ok", [])]:
        s = Scenario.model_validate(dump)
        if s.parent_id is not None and not root_ok:
            rejections.append(_reject(ctx, run_id, s.id, "dedup", "parent_rejected", s.parent_id))
            continue
        owner = thread_id(run_id, _item(state).index)
        verdict = await asyncio.to_thread(
            ctx.deduper.check_and_add, s.id, s.family_id or s.id, s.query, owner
        )
        if verdict.duplicate_of is not None:
            detail = f"{verdict.duplicate_of} ({verdict.reason} {verdict.score:.3f})"
            rejections.append(_reject(ctx, run_id, s.id, "dedup", f"near_duplicate_{verdict.reason}", detail))
            continue
        root_ok = root_ok or s.parent_id is None
        accepted.append(dump)
    return {"accepted": accepted, "rejections": rejections}


async def store_node(state: GenerateState, runtime: Runtime[GenerateContext]) -> dict[str, Any]:
    ctx = runtime.context
    stored = []
    for dump in state.get("accepted", []):
        scenario = Scenario.model_validate(dump)
        ctx.store.add_scenario(scenario)  # idempotent by content id: a replayed step stores nothing new
        stored.append(scenario.id)
    return {"stored": stored}


# ------------------------------------------------------------------------------------------- routers


def route_after_gate_draft(state: GenerateState) -> list[Send] | Literal["dedup", "__end__"]:
    """Rejected draft: stop. Operators planned: one `mutate` branch each. Otherwise straight to dedup."""
    if not state.get("draft_ok"):
        return END
    operators = _item(state).operators
    if not operators:
        return "dedup"
    return [
        Send(
            "mutate",
            MutateTask(
                run_id=state["run_id"],
                item=state["item"],
                draft=state["draft"],  # type: ignore[typeddict-item]
                parts=state.get("parts"),
                operator=op,
            ),
        )
        for op in operators
    ]


def build_graph() -> StateGraph:
    """The per-item graph, uncompiled; compile with a checkpointer where it is used."""
    g = StateGraph(
        GenerateState,
        context_schema=GenerateContext,
        input_schema=GenerateInput,
        output_schema=GenerateOutput,
    )
    g.add_node("retrieve", retrieve, retry_policy=RETRY)
    g.add_node("draft", draft_node, retry_policy=RETRY)
    g.add_node("gate_draft", gate_draft, retry_policy=RETRY)
    g.add_node("mutate", mutate_node, retry_policy=RETRY)
    g.add_node("gate_mutants", gate_mutants, retry_policy=RETRY)
    g.add_node("dedup", dedup, retry_policy=RETRY)
    g.add_node("store", store_node, retry_policy=RETRY)
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "draft")
    g.add_edge("draft", "gate_draft")
    g.add_conditional_edges("gate_draft", route_after_gate_draft, ["mutate", "dedup", END])
    g.add_edge("mutate", "gate_mutants")
    g.add_edge("gate_mutants", "dedup")
    g.add_edge("dedup", "store")
    g.add_edge("store", END)
    return g


def studio_graph():  # pragma: no cover - entry point for langgraph.json / `langgraph dev`
    """Compiled without a checkpointer: the LangGraph server supplies its own."""
    return build_graph().compile()


# ------------------------------------------------------------------------------------------- runner


@dataclass
class ThreadOutcome:
    index: int
    status: Literal["done", "skipped", "failed"]
    stored: list[str] = field(default_factory=list)
    error: str = ""


async def run_threads(
    items: Sequence[PlanItem],
    *,
    run_id: str,
    context: GenerateContext,
    checkpoint_path: Path,
    concurrency: int = 4,
    on_done: Callable[[ThreadOutcome], None] | None = None,
) -> list[ThreadOutcome]:
    """Run every item as its own checkpointed thread, at most `concurrency` at a time.

    Finished threads are skipped; unfinished ones resume from their last checkpoint. A thread that
    fails is reported (and recorded as a gate event) and the others go on; rerunning resumes it.
    """
    limit = asyncio.Semaphore(max(1, concurrency))
    with inline_sqlite_saver(checkpoint_path) as saver:
        graph = build_graph().compile(checkpointer=saver)

        async def one(item: PlanItem) -> ThreadOutcome:
            config = {"configurable": {"thread_id": thread_id(run_id, item.index)}}
            async with limit:
                try:
                    # sync durability: a step is on disk before the next starts, so kill -9 loses at most
                    # the steps in flight (async mode may also lose the last finished one)
                    finished, out = await run_thread(
                        graph,
                        config,
                        lambda: GenerateInput(run_id=run_id, item=item.model_dump()),
                        context=context,
                        durability="sync",
                    )
                    stored = list(out.get("stored", []))
                    outcome = ThreadOutcome(item.index, "skipped" if finished else "done", stored)
                except Exception as exc:  # noqa: BLE001 - one failed thread must not stop the run; reported below
                    error = f"{type(exc).__name__}: {exc}"
                    context.store.add_gate_event(
                        run_id, thread_id(run_id, item.index), "error", False, type(exc).__name__, error
                    )
                    outcome = ThreadOutcome(item.index, "failed", error=error)
            if on_done is not None:
                on_done(outcome)
            return outcome

        return list(await asyncio.gather(*(one(item) for item in items)))


# ------------------------------------------------------------------------------------------- a run


@dataclass(frozen=True)
class GenerateRequest:
    """What a run was asked for; stored in its manifest, so a resume needs only the run id."""

    n: int
    scenes: tuple[str, ...]
    mutations: int = 2
    objective_share: float = 0.0
    k: int = 5
    seed: int = 0


def git_sha() -> str:
    """The checkout's commit, or '' outside a git checkout (an installed wheel)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def load_or_plan(
    store: Any, run_id: str, request: GenerateRequest, index: Any, manifest_extra: dict[str, Any]
) -> tuple[list[PlanItem], bool]:
    """The run's items: from its manifest when it exists (a resume), else planned and recorded now."""
    from medes.agents.planner import plan, scene_candidates

    existing = store.run(run_id)
    if existing is not None:
        if existing["kind"] != "generate" or "plan" not in existing["manifest"]:
            raise ValueError(f"run {run_id} exists in the store but is not a generation run")
        return [PlanItem.model_validate(d) for d in existing["manifest"]["plan"]], True
    items = plan(
        request.n,
        run_id=run_id,
        seed=request.seed,
        candidates=scene_candidates(index, request.scenes),
        failure_stats=store.failure_stats(),
        mutations=request.mutations,
        objective_share=request.objective_share,
    )
    manifest = {
        **manifest_extra,
        "request": {**request.__dict__, "scenes": list(request.scenes)},
        "git_sha": git_sha(),
        "prompt_hashes": {"draft": prompt_hash("draft"), "mutate": prompt_hash("mutate")},
        "plan": [item.model_dump() for item in items],
    }
    store.start_run(run_id, "generate", manifest)
    return items, False


def summarize(store: Any, run_id: str, outcomes: Sequence[ThreadOutcome], elapsed_s: float) -> dict[str, Any]:
    ledger = store.ledger(run_id)
    accepted = store.scenarios(run_id=run_id)
    prompt_tokens = sum(e["prompt_tokens"] for e in ledger)
    completion_tokens = sum(e["completion_tokens"] for e in ledger)
    return {
        "items": len(outcomes),
        "threads": {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")},
        "accepted": len(accepted),
        "accepted_by_kind": {
            "draft": sum(s.parent_id is None for s in accepted),
            "mutation": sum(s.parent_id is not None for s in accepted),
        },
        "rejections": store.gate_profile(run_id),
        "llm_calls": len(ledger),
        "llm_failures": sum(e["outcome"] != "ok" for e in ledger),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "tokens_per_accepted": round((prompt_tokens + completion_tokens) / len(accepted), 1)
        if accepted
        else None,
        "elapsed_s": round(elapsed_s, 1),
        "errors": [o.error for o in outcomes if o.status == "failed"][:5],
    }


def open_generation_index(index_dir: Path | None, settings: Any) -> Any:
    """`--index DIR`, else the default index under MEDES_HOME, built from the built-in pack when absent."""
    from medes.retrieval.index import MANIFEST, HybridIndex

    if index_dir is not None:
        return HybridIndex.open(index_dir)
    default = settings.resolved_index_dir()
    if not (default / MANIFEST).is_file():
        from medes.retrieval.packs import builtin_pack_dir, load_corpus

        print(f"medes: building the default index of the built-in pack in {default}", file=sys.stderr)
        report = load_corpus([builtin_pack_dir()])
        index = HybridIndex.build(report.provisions, settings.embedder, packs=[m.id for m in report.packs])
        index.save(default)
    return HybridIndex.open(default)


@dataclass
class GenerateResult:
    run_id: str
    resumed: bool
    summary: dict[str, Any]
    store_path: Path
    checkpoint_path: Path


def run_generate(
    request: GenerateRequest,
    *,
    run_id: str | None = None,
    llm_spec: str | None = None,
    store_path: Path | None = None,
    index_dir: Path | None = None,
    concurrency: int = 4,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[ThreadOutcome], None] | None = None,
) -> GenerateResult:
    """Plan (or reload) a run, run its threads, record the summary. Resuming needs only `run_id`."""
    import time

    from medes.agents.dedup import CachedEmbedder, Deduper, embed_threshold_for
    from medes.llm import TokenLedger, get_llm
    from medes.records import new_id
    from medes.settings import get_settings
    from medes.store import Store

    settings = get_settings()
    store_path = store_path or settings.resolved_store_path()
    run_id = run_id or new_id("gen")
    started = time.perf_counter()
    with Store(store_path) as store:
        previous = store.run(run_id)
        if previous is not None and previous["kind"] == "generate":
            request = GenerateRequest(
                **{
                    **previous["manifest"]["request"],
                    "scenes": tuple(previous["manifest"]["request"]["scenes"]),
                }
            )
            llm_spec = llm_spec or previous["manifest"].get("llm")
        index = open_generation_index(index_dir, settings)
        llm = get_llm(llm_spec, settings=settings, ledger=TokenLedger(sink=store.ledger_sink))
        embedder = index.embedder  # one model loaded, and dedup vectors match what the index was built with
        cached = CachedEmbedder(embedder, settings.home / "cache")
        deduper = Deduper(
            cached.embed_queries,
            embed_threshold=embed_threshold_for(embedder.id),
        )
        manifest_extra = {
            "settings": settings.public_dict(),
            "llm": llm.id,
            "model_ids": [llm.id],
            "index": {
                "dir": str(index_dir or settings.resolved_index_dir()),
                "fingerprint": index.manifest["fingerprint"],
                "embedder": index.manifest["embedder"],
            },
            "dedup": {
                "embedder": embedder.id,
                "embed_threshold": deduper.embed_threshold,
                "minhash_threshold": deduper.minhash_threshold,
            },
            "seed": request.seed,
        }
        items, resumed = load_or_plan(store, run_id, request, index, manifest_extra)
        deduper.add_many([(s.id, s.family_id or s.id, s.query) for s in store.scenarios()])
        context = GenerateContext(llm=llm, index=index, store=store, deduper=deduper, k=request.k)
        checkpoint_path = store_path.with_name(f"{store_path.stem}.checkpoints.sqlite")
        if on_start is not None:
            on_start(len(items))
        try:
            outcomes = asyncio.run(
                run_threads(
                    items,
                    run_id=run_id,
                    context=context,
                    checkpoint_path=checkpoint_path,
                    concurrency=concurrency,
                    on_done=on_done,
                )
            )
        finally:
            cached.close()
        summary = summarize(store, run_id, outcomes, time.perf_counter() - started)
        failed = summary["threads"]["failed"]
        store.finish_run(run_id, summary, status="incomplete" if failed else "done")
    return GenerateResult(run_id, resumed, summary, store_path, checkpoint_path)
