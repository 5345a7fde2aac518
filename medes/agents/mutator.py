"""Mutator: rewrite a subjective draft with one MedES attack operator (harder, same norm).

The operator texts live in `prompts/mutate.j2`, so their wording is versioned by the prompt hash.
The child keeps the parent's norm ids and reference (the norm under test does not change), records
the operator chain in `attack`, points `parent_id` at the draft and `family_id` at the root, and is
one step harder. The parent query is untrusted text: it is shown inside a ⟦原情境⟧ fence that the
system prompt declares to be data, with any fence marker inside it defused (`guardian.defuse`).
"""

from __future__ import annotations

from medes.agents.drafter import ScenarioParts, assemble_query, scenario_id
from medes.agents.guardian import defuse
from medes.llm import LLM, messages
from medes.prompts import Prompt, render
from medes.records import MUTATION_OPERATORS, Scenario


def mutate_prompt(operator: str, parent: Scenario, parts: ScenarioParts | None) -> Prompt:
    if operator not in MUTATION_OPERATORS:
        raise ValueError(f"unknown mutation operator {operator!r}; known: {', '.join(MUTATION_OPERATORS)}")
    # the parent query and speaker are model output (untrusted): fenced by the template, defused here
    speaker = defuse(parts.speaker) if parts is not None else "与原情境相同"
    return render("mutate", operator=operator, query=defuse(parent.query), speaker=speaker)


def mutate_instructions(operator: str) -> str:
    """What the mutator is told, without the material (the parent scenario and its speaker)."""
    prompt = render("mutate", operator=operator, query="", speaker="")
    return f"{prompt.system}\n{prompt.user}"


async def mutate(
    llm: LLM,
    *,
    parent: Scenario,
    parts: ScenarioParts | None,
    operator: str,
    run_id: str = "",
) -> tuple[Scenario | None, str, Prompt, str]:
    """(child, raw output, prompt, error); the child is None when the output could not be parsed."""
    prompt = mutate_prompt(operator, parent, parts)
    result = await llm.structured(
        messages(prompt.system, prompt.user), ScenarioParts, node="mutate", run_id=run_id
    )
    if result.parsed is None:
        return None, result.raw, prompt, result.error or "no output"
    query = assemble_query(result.parsed)  # type: ignore[arg-type]
    child = Scenario(
        id=scenario_id(parent.kind, parent.scene, query, {}, ""),
        scene=parent.scene,
        query=query,
        norm_ids=list(parent.norm_ids),
        reference=parent.reference,
        kind=parent.kind,
        attack=[*parent.attack, operator],
        difficulty=parent.difficulty + 1,
        parent_id=parent.id,
        family_id=parent.family_id or parent.id,
    )
    return child, result.raw, prompt, ""
