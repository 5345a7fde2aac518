"""Ask: a question → retrieved provisions → an answer that cites them (or the provisions alone).

Graph: `retrieve` → `answer` (an LLM is configured) | `retrieval_only` (none, or `--no-llm`).
The answer's citations are constrained to the ids that were retrieved, so each one resolves.
Without an LLM the answer is the ranked provisions, labelled as such: never invented text.

`answer_mcq` answers a keyed multiple-choice item with the option letters as an enum, so the
model can only pick existing letters (single answer, or a set for multi-select items).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, create_model
from typing_extensions import TypedDict

from medes.agents.guardian import PROVISION_CHARS, defuse, provision_view
from medes.llm import LLM, LLMConfigError, messages
from medes.prompts import render
from medes.records import Provision

ASK_PROMPT = "ask"
MCQ_PROMPT = "mcq"
LETTERS = "ABCDEFGH"


class Hit(Protocol):
    """A retrieval hit as `medes.retrieval.index.HybridIndex.search` returns it."""

    provision: Provision
    score: float
    rank: int


class Retriever(Protocol):
    def search(self, query: str, k: int) -> Sequence[Hit]: ...


class Citation(BaseModel):
    id: str
    citation: str
    """《title》article"""
    text: str
    score: float
    rank: int


class AskResult(BaseModel):
    question: str
    mode: Literal["llm", "retrieval-only"]
    answer: str
    citations: list[Citation] = Field(default_factory=list)
    """Provisions the answer relies on (llm) or all ranked hits (retrieval-only)."""
    hits: list[Citation] = Field(default_factory=list)
    model: str = ""
    prompt_hash: str = ""
    error: str | None = None
    """Why an LLM answer was not produced, when one was asked for."""


def _citation(hit: Hit) -> Citation:
    p = hit.provision
    return Citation(id=p.id, citation=p.citation(), text=p.text, score=float(hit.score), rank=int(hit.rank))


# ------------------------------------------------------------------------------------ graph


class AskState(TypedDict, total=False):
    question: str
    """The user's question (untrusted text)."""
    hits: list[Citation]
    """Retrieved provisions, best first."""
    provisions: list[Provision]
    """The same provisions as records, for the answer prompt."""
    result: AskResult
    """The final answer."""


@dataclass
class AskContext:
    index: Retriever
    llm: LLM | None = None
    """None: retrieval-only."""
    k: int = 5


def retrieve(state: AskState, runtime: Runtime[AskContext]) -> dict[str, Any]:
    found = runtime.context.index.search(state["question"], runtime.context.k)
    return {"hits": [_citation(h) for h in found], "provisions": [h.provision for h in found]}


def route_after_retrieve(
    state: AskState, runtime: Runtime[AskContext]
) -> Literal["answer", "retrieval_only"]:
    return "answer" if runtime.context.llm is not None and state["hits"] else "retrieval_only"


def retrieval_only_answer(question: str, hits: list[Citation], error: str | None = None) -> AskResult:
    if not hits:
        text = "未检索到相关条款。"
    else:
        lines = ["（仅检索结果，未经大模型生成）以下条款与问题最相关："]
        lines += [f"{h.rank}. {h.citation}：{h.text}" for h in hits]
        text = "\n".join(lines)
    return AskResult(
        question=question, mode="retrieval-only", answer=text, citations=hits, hits=hits, error=error
    )


def retrieval_only(state: AskState) -> dict[str, Any]:
    return {"result": retrieval_only_answer(state["question"], state["hits"])}


def answer_schema(ids: Sequence[str]) -> type[BaseModel]:
    """Cached per id tuple, so the LLM layer's per-schema tool-spec cache hits."""
    return _answer_schema(tuple(ids))


@functools.lru_cache(maxsize=256)
def _answer_schema(ids: tuple[str, ...]) -> type[BaseModel]:
    enum = Literal[ids]  # type: ignore[valid-type]
    return create_model(
        "CitedAnswer",
        answer=(str, Field(max_length=800, description="依据参考条款作答")),
        cited_ids=(list[enum], Field(min_length=1, max_length=len(ids), description="回答所依据的条款编号")),  # type: ignore[valid-type]
    )


async def answer(state: AskState, runtime: Runtime[AskContext]) -> dict[str, Any]:
    llm = runtime.context.llm
    assert llm is not None
    hits, question = state["hits"], state["question"]
    prompt = render(
        ASK_PROMPT, question=defuse(question), provisions=[provision_view(p) for p in state["provisions"]]
    )
    try:
        res = await llm.structured(
            messages(prompt.system, prompt.user), answer_schema([h.id for h in hits]), node="ask"
        )
    except LLMConfigError as exc:  # e.g. the local model's runtime is not installed
        return {"result": retrieval_only_answer(question, hits, error=f"LLM unavailable: {exc}")}
    if res.parsed is None:
        return {"result": retrieval_only_answer(question, hits, error=f"LLM answer unparseable: {res.error}")}
    by_id = {h.id: h for h in hits}
    cited = [by_id[i] for i in dict.fromkeys(res.parsed.cited_ids)]
    result = AskResult(
        question=question,
        mode="llm",
        answer=res.parsed.answer.strip(),
        citations=cited,
        hits=hits,
        model=llm.id,
        prompt_hash=prompt.hash,
    )
    return {"result": result}


def build_graph() -> StateGraph:
    g = StateGraph(AskState, context_schema=AskContext, output_schema=AskState)
    g.add_node("retrieve", retrieve)
    g.add_node("answer", answer)
    g.add_node("retrieval_only", retrieval_only)
    g.add_edge(START, "retrieve")
    g.add_conditional_edges("retrieve", route_after_retrieve)
    g.add_edge("answer", END)
    g.add_edge("retrieval_only", END)
    return g


def studio_graph():  # pragma: no cover - entry point for langgraph.json / `langgraph dev`
    """Compiled without a checkpointer: the LangGraph server supplies its own."""
    return build_graph().compile()


async def ask(question: str, index: Retriever, llm: LLM | None = None, k: int = 5) -> AskResult:
    graph = build_graph().compile()
    state = await graph.ainvoke({"question": question}, context=AskContext(index=index, llm=llm, k=k))
    return state["result"]


def format_answer(result: AskResult) -> str:
    """Plain-text rendering for the terminal: the answer, then its citations."""
    lines = [result.answer]
    if result.mode == "llm" and result.citations:
        lines.append("")
        lines.append("依据：")
        lines += [f"- {c.citation}（{c.id}）" for c in result.citations]
    if result.error:
        lines.append(f"\n注意：{result.error}；以上为检索结果。")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ MCQ


class McqAnswer(BaseModel):
    letters: str
    """Chosen letters, sorted ('' when the output could not be parsed)."""
    reasoning: str = ""
    raw: str = ""
    error: str | None = None
    prompt_hash: str = ""


def normalize_options(options: Mapping[str, str] | Sequence[str]) -> list[tuple[str, str]]:
    if isinstance(options, Mapping):
        pairs = [(k.strip().upper(), v) for k, v in options.items()]
    else:
        pairs = list(zip(LETTERS, options, strict=False))
        if len(options) > len(LETTERS):
            raise ValueError(f"at most {len(LETTERS)} options, got {len(options)}")
    if len(pairs) < 2:
        raise ValueError("a multiple-choice item needs at least two options")
    return pairs


def mcq_schema(letters: Sequence[str], *, multi: bool, reasoning_chars: int) -> type[BaseModel]:
    """Cached per (letters, multi, reasoning_chars): one class per item shape, not per call."""
    return _mcq_schema(tuple(letters), multi, reasoning_chars)


@functools.lru_cache(maxsize=64)
def _mcq_schema(letters: tuple[str, ...], multi: bool, reasoning_chars: int) -> type[BaseModel]:
    enum = Literal[letters]  # type: ignore[valid-type]
    fields: dict[str, Any] = {}
    if reasoning_chars:
        fields["reasoning"] = (str, Field(max_length=reasoning_chars, description="简要分析"))
    if multi:
        fields["answers"] = (
            list[enum],
            Field(min_length=1, max_length=len(letters), description="全部正确选项"),
        )  # type: ignore[valid-type]
    else:
        fields["answer"] = (enum, Field(description="唯一正确选项"))
    return create_model("McqChoice", **fields)


async def answer_mcq(
    llm: LLM,
    question: str,
    options: Mapping[str, str] | Sequence[str],
    *,
    multi: bool = False,
    provisions: Sequence[Provision] = (),
    reasoning_chars: int = 0,
    provision_chars: int = PROVISION_CHARS,
    run_id: str = "",
) -> McqAnswer:
    """Pick option letters under a letter-enum schema; retrieved `provisions` ground it when given."""
    pairs = normalize_options(options)
    prompt = render(
        MCQ_PROMPT,
        multi=multi,
        question=defuse(question),
        options=[(letter, defuse(text)) for letter, text in pairs],
        provisions=[provision_view(p, provision_chars) for p in provisions],
    )
    schema = mcq_schema([letter for letter, _ in pairs], multi=multi, reasoning_chars=reasoning_chars)
    res = await llm.structured(messages(prompt.system, prompt.user), schema, node="mcq", run_id=run_id)
    if res.parsed is None:
        return McqAnswer(letters="", raw=res.raw, error=res.error or "no answer", prompt_hash=prompt.hash)
    chosen = res.parsed.answers if multi else [res.parsed.answer]
    return McqAnswer(
        letters="".join(sorted(set(chosen))),
        reasoning=getattr(res.parsed, "reasoning", ""),
        raw=res.raw,
        prompt_hash=prompt.hash,
    )
