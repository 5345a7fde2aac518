"""Throughput of medes against a simulated OpenAI-compatible endpoint: calls/s vs the ideal C/L.

Why: generation and evaluation are I/O-bound fan-outs over an LLM endpoint; with latency L and C
requests allowed in flight, a client that costs nothing reaches C/L calls/s. What we lose below that
is orchestration CPU (HTTP client, langchain, langgraph, pydantic, our own code, SQLite). The simulator
runs in its own process (tests/support/simserver.py), so this process's CPU time is medes alone.

    python bench/throughput.py llm      --latency 0.2 --concurrency 1,8,32,64,128
    python bench/throughput.py generate --latency 0.2 --concurrency 8,64 -n 64
    python bench/throughput.py evaluate --latency 0.2 --concurrency 8,64 -n 128
    python bench/throughput.py llm --concurrency 64 --profile /tmp/llm.prof   # + CPU by package

Each mode prints one JSON line per concurrency: LLM calls counted at the endpoint, wall seconds,
achieved calls/s, ideal C/L, their ratio (end-to-end: setup, ramp-up and the ramp-down tail of a
finite batch included), this process's CPU per call and per scenario (and the event loop's own
share), and the endpoint's mean requests in flight ÷ C, over the busy span and over its steady
window (`steady_efficiency`: first answer → last arrival; simserver `Load`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SIMSERVER = REPO / "tests" / "support" / "simserver.py"
CACHE = Path("/tmp/medes-cache")
MODEL = "sim-model"


# ------------------------------------------------------------------------------------ endpoint


@dataclass
class Endpoint:
    """A running simserver: base URL for clients, and its request counters."""

    base_url: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/_stats", timeout=10) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        req = urllib.request.Request(self.base_url.removesuffix("/v1") + "/_reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).read()


@contextmanager
def endpoint(latency: float, dist: str = "constant") -> Iterator[Endpoint]:
    """Start the simulator in its own process (its CPU is not ours) on a free port.

    `dist`: `constant` keeps every call at exactly L, so C calls finish together and the client
    handles them one after another (a wave costs L + C × CPU per call); `uniform` draws from
    [0.5 L, 1.5 L], same mean, so calls spread out as they do on a real server. The ideal is C / L
    either way (Little's law: throughput = calls in flight / mean latency).
    """
    cmd = [sys.executable, str(SIMSERVER), "--port", "0", "--latency", str(latency), "--no-records"]
    if dist == "uniform":
        cmd += [
            "--latency-dist",
            "uniform",
            "--latency-low",
            str(0.5 * latency),
            "--latency-high",
            str(1.5 * latency),
        ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening on" not in line:
            raise RuntimeError(f"simserver did not start: {line!r}")
        yield Endpoint(line.strip().rsplit(" ", 1)[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def use_endpoint(ep: Endpoint, home: Path, concurrency: int) -> None:
    """Point medes settings at the simulator (env + settings cache), as `medes` CLI users would."""
    os.environ.update(
        MEDES_HOME=str(home),
        MEDES_OPENAI_BASE_URL=ep.base_url,
        MEDES_OPENAI_API_KEY="sim",
        MEDES_MAX_CONCURRENCY=str(concurrency),
        MEDES_LLM=f"openai:{MODEL}",
    )
    from medes.settings import get_settings

    get_settings.cache_clear()


@dataclass
class Measure:
    mode: str
    concurrency: int
    latency_s: float
    calls: int
    scenarios: int
    wall_s: float
    cpu_s: float
    extra: dict[str, Any]

    def steady(self) -> dict[str, Any]:
        """Steady state next to the end-to-end ratio (never instead of it): mean requests in flight
        at the endpoint ÷ C, over the whole busy span and over its steady window (first answer →
        last arrival; simserver `Load`), which leaves out ramp-up and the ramp-down tail that every
        finite batch has."""
        if not LOAD:
            return {}
        return {
            "inflight_mean": LOAD["mean_inflight"],
            "inflight_efficiency": round(LOAD["mean_inflight"] / self.concurrency, 3),
            "steady_window_s": LOAD["steady_s"],
            "steady_inflight_mean": LOAD["steady_mean_inflight"],
            "steady_efficiency": round(LOAD["steady_mean_inflight"] / self.concurrency, 3),
        }

    def row(self) -> dict[str, Any]:
        ideal = self.concurrency / self.latency_s
        rate = self.calls / self.wall_s
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "latency_s": self.latency_s,
            "llm_calls": self.calls,
            "scenarios": self.scenarios,
            "wall_s": round(self.wall_s, 2),
            "calls_per_s": round(rate, 1),
            "ideal_calls_per_s": round(ideal, 1),
            "efficiency": round(rate / ideal, 3),
            "cpu_s": round(self.cpu_s, 2),
            "cpu_ms_per_call": round(1000 * self.cpu_s / max(self.calls, 1), 2),
            "cpu_ms_per_scenario": round(1000 * self.cpu_s / max(self.scenarios, 1), 2),
            "cpu_ms_per_call_loop_thread": round(1000 * MAIN_THREAD_CPU_S[0] / max(self.calls, 1), 2),
            "cpu_bound_ceiling_calls_per_s": round(self.calls / max(self.cpu_s, 1e-9), 1),
            "load_avg_1m": round(os.getloadavg()[0], 1),
            **self.steady(),
            **self.extra,
        }


MAIN_THREAD_CPU_S = [0.0]
"""CPU of the event-loop thread alone in the last `timed` section (the rest ran in worker threads:
aiosqlite, `asyncio.to_thread`); the profiler's process clock charges worker time to `epoll.poll`."""

LOAD: dict[str, float] = {}
"""The endpoint's in-flight integral for the last `timed` section (simserver `Load`)."""

PROFILER: cProfile.Profile | None = None
"""Set by `--profile`: profiles the measured section only (not imports or setup)."""


def timed(ep: Endpoint, fn: Callable[[], Any]) -> tuple[Any, int, float, float]:
    """Run `fn`; returns (its result, endpoint chat requests, wall s, process CPU s)."""
    ep.reset()
    cpu0, wall0, main0 = time.process_time(), time.perf_counter(), time.thread_time()
    if PROFILER is not None:
        PROFILER.enable()
    try:
        out = fn()
    finally:
        if PROFILER is not None:
            PROFILER.disable()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    MAIN_THREAD_CPU_S[0] = time.thread_time() - main0
    stats = ep.stats()
    LOAD.clear()
    LOAD.update(stats.get("load", {}))
    return out, int(stats["total"]), wall, cpu


# ------------------------------------------------------------------------------------ workloads


def run_llm(ep: Endpoint, c: int, latency: float, args: argparse.Namespace) -> Measure:
    """Raw `LLM.structured` calls (the judge's verdict schema), C in flight, distinct prompts."""
    from medes.agents.guardian import verdict_schema
    from medes.llm import get_llm, messages

    home = Path(tempfile.mkdtemp(prefix="medes-tp-"))
    use_endpoint(ep, home, c)
    llm = get_llm()
    schema = verdict_schema([f"测试法#第{i}条" for i in range(1, 6)])
    n = max(args.min_calls, args.waves * c)

    async def main() -> None:
        async def one(i: int) -> None:
            out = await llm.structured(
                messages("你是医学伦理评审员。", f"第{i}个情境：我是医生，打算……这样可以吗？"),
                schema,
                node="bench",
            )
            if out.parsed is None:
                raise RuntimeError(f"call {i} failed: {out.error}")

        await asyncio.gather(*(one(i) for i in range(n)))

    _, calls, wall, cpu = timed(ep, lambda: asyncio.run(main()))
    shutil.rmtree(home, ignore_errors=True)
    return Measure("llm", c, latency, calls, n, wall, cpu, {"strategy": llm.strategy})


def bench_index() -> Path:
    """The built-in corpus pack under the instant `hash` embedder (retrieval is not what we measure)."""
    path = CACHE / "throughput-index-hash"
    if not (path / "manifest.json").is_file():
        from medes.retrieval.index import HybridIndex
        from medes.retrieval.packs import builtin_pack_dir, load_corpus

        report = load_corpus([builtin_pack_dir()])
        HybridIndex.build(report.provisions, "hash", packs=[m.id for m in report.packs]).save(path)
    return path


def run_generate(ep: Endpoint, c: int, latency: float, args: argparse.Namespace) -> Measure:
    """`medes generate` as the CLI runs it (planner, retrieval, gates, dedup, store, checkpoints).

    The measured section is the whole `run_generate` call, run setup (index open, planning) included.
    """
    from medes.graphs.generate import GenerateRequest
    from medes.graphs.generate import run_generate as generate
    from medes.records import MEDES_SCENES

    home = Path(tempfile.mkdtemp(prefix="medes-tp-"))
    use_endpoint(ep, home, c)
    index = bench_index()
    threads = args.threads or c
    request = GenerateRequest(n=args.n, scenes=MEDES_SCENES, mutations=args.mutations, seed=0)
    result, calls, wall, cpu = timed(
        ep,
        lambda: generate(
            request, run_id="bench", store_path=home / "m.sqlite", index_dir=index, concurrency=threads
        ),
    )
    s = result.summary
    shutil.rmtree(home, ignore_errors=True)
    extra = {
        "threads": threads,
        "accepted": s["accepted"],
        "failed": s["threads"]["failed"],
        "rejections": s["rejections"],
    }
    return Measure("generate", c, latency, calls, args.n, wall, cpu, extra)


def synthetic_scenarios(n: int) -> list[Any]:
    from medes.records import MEDES_SCENES, Scenario, content_id

    out = []
    for i in range(n):
        query = f"我是县医院的主治医生（第{i}例）。一位老人需要手术，家属不在身边，我打算让邻居代签同意书，这样可以吗？"
        out.append(
            Scenario(
                id=content_id("bench", str(i)),
                scene=MEDES_SCENES[i % len(MEDES_SCENES)],
                query=query,
                norm_ids=[],
                reference="手术前应取得患者或其近亲属的明确同意。",
                kind="subjective",
            )
        )
    return out


def run_evaluate(ep: Endpoint, c: int, latency: float, args: argparse.Namespace) -> Measure:
    """`medes evaluate`'s graph: respond (text) then judge (structured) per scenario, results stored.

    Responder and judge share one LLM (one semaphore of C) so the ideal is C/L. With
    `--graph-max-concurrency` the graph is compiled here with that LangGraph `max_concurrency`
    instead of `run_evaluation`'s built-in value.
    """
    from medes.agents.guardian import Cascade, LLMJudge
    from medes.agents.responder import Responder
    from medes.graphs.evaluate import EvaluateContext, EvaluateInput, build_graph, run_evaluation
    from medes.llm import TokenLedger, get_llm
    from medes.retrieval.index import HybridIndex
    from medes.store import Store

    home = Path(tempfile.mkdtemp(prefix="medes-tp-"))
    use_endpoint(ep, home, c)
    store = Store(home / "m.sqlite")
    llm = get_llm(ledger=TokenLedger(sink=store.ledger_sink))
    scenarios = synthetic_scenarios(args.n)
    context = EvaluateContext(
        store=store,
        responders={llm.id: Responder(llm)},
        guardian=Cascade(LLMJudge(llm)),
        index=HybridIndex.open(bench_index()),
        k=5,
        out_dir=None,
    )
    checkpoints = home / "checkpoints.sqlite"

    async def lifted() -> Any:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(checkpoints)) as saver:
            graph = build_graph().compile(checkpointer=saver)
            config = {
                "configurable": {"thread_id": "evaluate:bench"},
                "max_concurrency": args.graph_max_concurrency,
            }
            start = EvaluateInput(
                run_id="bench", scenarios=[s.model_dump(mode="json") for s in scenarios], models=[llm.id]
            )
            return await graph.ainvoke(start, config, context=context)

    def go() -> Any:
        if args.graph_max_concurrency:
            return asyncio.run(lifted())
        return asyncio.run(
            run_evaluation(scenarios, run_id="bench", context=context, checkpoint_path=checkpoints)
        )

    state, calls, wall, cpu = timed(ep, go)
    judged = state["summary"]["judged"]
    store.close()
    shutil.rmtree(home, ignore_errors=True)
    extra = {
        "judged": judged,
        "graph_max_concurrency": args.graph_max_concurrency or "run_evaluation default",
    }
    return Measure("evaluate", c, latency, calls, args.n, wall, cpu, extra)


MODES: dict[str, Callable[[Endpoint, int, float, argparse.Namespace], Measure]] = {
    "llm": run_llm,
    "generate": run_generate,
    "evaluate": run_evaluate,
}


# ------------------------------------------------------------------------------------ profile

PACKAGES = (
    "openai",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "h11",
    "anyio",
    "langchain_openai",
    "langchain_core",
    "langgraph",
    "pydantic",
    "pydantic_core",
    "jinja2",
    "sqlite3",
    "aiosqlite",
    "ormsgpack",
    "medes",
    "asyncio",
    "json",
    "ssl",
    "selectors",
)


def package_of(filename: str) -> str:
    """Attribute a profiled function to its top-level package (site-packages or stdlib)."""
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    if "medes" in parts:
        return "medes"
    for name in ("asyncio", "json", "sqlite3", "concurrent", "threading", "selectors", "ssl", "socket"):
        if name in parts or Path(filename).stem == name:
            return name
    return "stdlib/other"


def by_package(stats: pstats.Stats) -> dict[str, float]:
    """Self time (seconds) per package; builtins are charged to their caller's package."""
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        pkg = package_of(filename)
        if pkg == "builtins" and callers:
            caller = max(callers.items(), key=lambda kv: kv[1][2])[0]
            pkg = package_of(caller[0])
        totals[pkg] = totals.get(pkg, 0.0) + tottime
    total = sum(totals.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


# ------------------------------------------------------------------------------------ main


def child(a: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this (fresh) process: imports done, caches cold, one event loop.

    jieba's dictionary is loaded first (1–4 s once per process, on the first tokenised query): a
    long run pays it once, so it would only blur a measurement of a few seconds.
    """
    from medes.retrieval.bm25 import tokenize

    tokenize("预热")
    ep = Endpoint(a.base_url)
    global PROFILER
    clock = time.thread_time if a.profile_clock == "thread" else time.process_time
    prof = PROFILER = cProfile.Profile(clock) if a.profile else None
    row = MODES[a.mode](ep, a.c, a.latency, a).row()
    row["latency_dist"] = a.latency_dist
    if prof:
        prof.dump_stats(a.profile)
        row["cpu_share_by_package_pct"] = by_package(pstats.Stats(str(a.profile)))
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--latency", type=float, default=0.2, help="simulated endpoint latency L (s)")
    p.add_argument("--latency-dist", choices=("constant", "uniform"), default="constant")
    p.add_argument("--concurrency", default="1,8,32,64,128", help="comma-separated C values")
    p.add_argument("--waves", type=int, default=8, help="llm mode: calls = waves × C")
    p.add_argument("--min-calls", type=int, default=40)
    p.add_argument("-n", type=int, default=64, help="generate/evaluate: scenarios")
    p.add_argument("--mutations", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="generate: items in flight (default C)")
    p.add_argument("--graph-max-concurrency", type=int, default=0, help="evaluate: LangGraph max_concurrency")
    p.add_argument(
        "--profile", type=Path, default=None, help="cProfile each run; prints CPU share by package"
    )
    p.add_argument(
        "--profile-clock",
        choices=("process", "thread"),
        default="process",
        help="process: all threads' CPU (worker time lands on epoll.poll); thread: the event loop's own",
    )
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here too")
    p.add_argument("--base-url", default="", help=argparse.SUPPRESS)  # child: the parent's endpoint
    p.add_argument("--c", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if a.base_url:
        print(json.dumps(child(a), ensure_ascii=False), flush=True)
        return
    with endpoint(a.latency, a.latency_dist) as ep:
        for c in [int(x) for x in a.concurrency.split(",")]:
            cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
            out = subprocess.run(
                [*cmd, "--base-url", ep.base_url, "--c", str(c)], capture_output=True, text=True
            )
            if out.returncode != 0:
                raise SystemExit(f"C={c} failed:\n{out.stderr[-3000:]}")
            line = out.stdout.strip().splitlines()[-1]
            print(line, flush=True)
            if a.out:
                with a.out.open("a", encoding="utf-8") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
