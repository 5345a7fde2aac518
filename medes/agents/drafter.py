"""Drafter: one MedES-style item written around retrieved provisions.

The output schema is built per call with the retrieved provision ids as a `Literal` enum, so a
model cannot cite a norm it was not shown (grounding by construction; the gate checks it anyway).
A 0.5B model writes a better scenario when asked for its parts — who speaks, the situation, what
they plan, the question — so the schema asks for those and `assemble_query` joins them in code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from medes.agents.gates import states_norm
from medes.agents.guardian import defuse
from medes.llm import LLM, messages
from medes.prompts import Prompt, render
from medes.records import Provision, Scenario, content_id

SPEAKER_MAX = 30
SITUATION_MAX = 220
PLAN_MAX = 120
QUESTION_MAX = 60
REFERENCE_MAX = 150
STEM_MAX = 200
OPTION_MAX = 60


class ScenarioParts(BaseModel):
    """The first-person parts a subjective query is assembled from (kept in the thread state)."""

    speaker: str = Field(max_length=SPEAKER_MAX)
    situation: str = Field(max_length=SITUATION_MAX)
    plan: str = Field(max_length=PLAN_MAX)
    question: str = Field(max_length=QUESTION_MAX)


def _norm_field(ids: Sequence[str]) -> Any:
    norm = Literal[tuple(ids)]  # type: ignore[valid-type]
    return (list[norm], Field(min_length=1, max_length=2, description="考察的规范编号"))  # type: ignore[valid-type]


def subjective_schema(ids: Sequence[str]) -> type[BaseModel]:
    """norm ids first (the choice the rest depends on), then the parts, then the reference.

    Cached per id tuple: the same retrieval yields the same class, so the LLM layer's tool-spec cache
    (keyed by class) hits instead of rebuilding the spec on every call.
    """
    return _subjective_schema(tuple(ids))


@lru_cache(maxsize=256)
def _subjective_schema(ids: tuple[str, ...]) -> type[BaseModel]:
    return create_model(
        "SubjectiveDraft",
        norm_ids=_norm_field(ids),
        speaker=(str, Field(max_length=SPEAKER_MAX, description="说话人身份")),
        situation=(str, Field(max_length=SITUATION_MAX, description="具体情况")),
        plan=(str, Field(max_length=PLAN_MAX, description="说话人打算怎么做")),
        question=(str, Field(max_length=QUESTION_MAX, description="向AI提出的问题")),
        reference=(str, Field(max_length=REFERENCE_MAX, description="考点")),
    )


def objective_schema(ids: Sequence[str]) -> type[BaseModel]:
    """Stem, five options, key and reference; cached per id tuple like `subjective_schema`."""
    return _objective_schema(tuple(ids))


@lru_cache(maxsize=256)
def _objective_schema(ids: tuple[str, ...]) -> type[BaseModel]:
    letter = Literal["A", "B", "C", "D", "E"]
    options = {
        f"option_{c}": (str, Field(max_length=OPTION_MAX, description=f"选项{c.upper()}")) for c in "abcde"
    }
    return create_model(
        "ObjectiveDraft",
        norm_ids=_norm_field(ids),
        stem=(str, Field(max_length=STEM_MAX, description="题干")),
        **options,
        answer=(list[letter], Field(min_length=1, max_length=5, description="正确选项字母")),
        reference=(str, Field(max_length=REFERENCE_MAX, description="考点")),
    )


_END = "。！？?!…"


def _sentence(text: str) -> str:
    text = text.strip().strip("，,;；")
    return text if not text or text[-1] in _END else text + "。"


def assemble_query(parts: ScenarioParts) -> str:
    """`我是<speaker>。<situation><plan><question>` with the punctuation a model forgets."""
    speaker = re.sub(r"^(我是|我作为|作为)", "", parts.speaker.strip()).strip("，,。 ")
    head = f"我是{speaker}。" if speaker else ""
    question = parts.question.strip()
    if question and question[-1] not in _END:
        question += "？"
    return head + _sentence(parts.situation) + _sentence(parts.plan) + question


def scenario_id(kind: str, scene: str, query: str, options: dict[str, str], answer: str) -> str:
    """Content-derived: the same item is the same id in any run, so storing is idempotent."""
    opts = "\x1e".join(f"{k}={v}" for k, v in sorted(options.items()))
    return content_id("scn", kind, scene, query, opts, answer)


def draft_prompt(
    scene: str, kind: str, provisions: Sequence[dict[str, str]], *, speaker: str = "", setting: str = ""
) -> Prompt:
    """The draft prompt. Corpus text is untrusted: the template fences each provision, and every
    fence marker inside it is defused here. `speaker` / `setting` come from the plan item, so items
    sharing a (scene, norm) pair get different prompts."""
    shown = [{k: defuse(v) for k, v in p.items()} for p in provisions]
    return render("draft", scene=scene, kind=kind, provisions=shown, speaker=speaker, setting=setting)


def draft_instructions(scene: str, kind: str, *, speaker: str = "", setting: str = "") -> str:
    """What the drafter is told, without the material (the provisions): the echo gate's reference."""
    prompt = draft_prompt(scene, kind, [], speaker=speaker, setting=setting)
    return f"{prompt.system}\n{prompt.user}"


async def draft(
    llm: LLM,
    *,
    scene: str,
    kind: Literal["subjective", "objective"],
    provisions: Sequence[Provision],
    briefs: Sequence[dict[str, str]],
    speaker: str = "",
    setting: str = "",
    run_id: str = "",
) -> tuple[Scenario | None, ScenarioParts | None, str, Prompt, str]:
    """(scenario, parts, raw output, prompt, error). On failure the scenario is None and error says why."""
    ids = [p.id for p in provisions]
    schema = objective_schema(ids) if kind == "objective" else subjective_schema(ids)
    prompt = draft_prompt(scene, kind, briefs, speaker=speaker, setting=setting)
    result = await llm.structured(messages(prompt.system, prompt.user), schema, node="draft", run_id=run_id)
    if result.parsed is None:
        return None, None, result.raw, prompt, result.error or "no output"
    out = result.parsed.model_dump()
    norm_ids = list(dict.fromkeys(out["norm_ids"]))
    parts = None
    if kind == "objective":
        options = {c.upper(): out[f"option_{c}"].strip() for c in "abcde"}
        answer = "".join(sorted(set(out["answer"])))
        query = out["stem"].strip()
    else:
        parts = ScenarioParts(**{k: out[k] for k in ("speaker", "situation", "plan", "question")})
        options, answer = {}, ""
        query = assemble_query(parts)
    reference = out["reference"].strip()
    if not states_norm(reference):
        # small models often write just the article label; the cited provision's own text is the
        # norm in words, so the reference is taken from it instead of losing a grounded draft
        cited = next(p for p in provisions if p.id == norm_ids[0])
        reference = cited.text.strip()[:REFERENCE_MAX]
    sid = scenario_id(kind, scene, query, options, answer)
    scenario = Scenario(
        id=sid,
        scene=scene,
        query=query,
        norm_ids=norm_ids,
        reference=reference,
        kind=kind,
        options=options,
        answer=answer,
        family_id=sid,
    )
    return scenario, parts, result.raw, prompt, ""
