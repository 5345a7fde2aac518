"""State and runtime context of the generation graph (one thread per planned scenario).

State values are plain JSON (records as `model_dump(mode="json")`) so checkpoints stay readable
and portable across checkpointer backends; nodes rebuild records from them.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypedDict

from medes.agents.dedup import Deduper
from medes.agents.gates import GateConfig
from medes.llm import LLM
from medes.records import Provision
from medes.store import Store


class Hit(Protocol):
    provision: Provision
    score: float
    rank: int


class ProvisionIndex(Protocol):
    """What generation needs from a retrieval index (`medes.retrieval.index.HybridIndex`)."""

    def search(self, query: str, k: int) -> list[Hit]: ...

    def get(self, provision_id: str) -> Provision | None: ...


class GenerateInput(TypedDict):
    run_id: str
    item: dict[str, Any]
    """A `PlanItem` dump: index, scene, seed norm, kind, mutation operators."""


class GenerateOutput(TypedDict, total=False):
    stored: list[str]
    """Ids of the scenarios this thread stored."""
    rejections: list[dict[str, str]]


class GenerateState(TypedDict, total=False):
    run_id: str
    item: dict[str, Any]
    hits: list[dict[str, Any]]
    """`RetrievalHit` dumps, seed norm first; the only provisions the draft may cite."""
    draft: dict[str, Any] | None
    """The draft `Scenario` (None when the model output could not be parsed)."""
    parts: dict[str, Any] | None
    """The draft's `ScenarioParts` (subjective items), reused by the mutation prompts."""
    draft_ok: bool
    """The draft passed its gate."""
    mutants: Annotated[list[dict[str, Any]], operator.add]
    """Children from the parallel `mutate` branches (one per operator), before their gate."""
    mutants_ok: list[dict[str, Any]]
    """Children that passed their gate."""
    accepted: list[dict[str, Any]]
    """Scenarios that survived dedup, to be stored."""
    stored: list[str]
    rejections: Annotated[list[dict[str, str]], operator.add]
    """{item, stage, reason} for every rejection in this thread (also written as gate events)."""


class MutateTask(TypedDict):
    """What one `Send("mutate", …)` branch receives."""

    run_id: str
    item: dict[str, Any]
    draft: dict[str, Any]
    parts: dict[str, Any] | None
    operator: str


@dataclass
class GenerateContext:
    """Run-scoped dependencies, given at invoke time (never checkpointed, never built at import)."""

    llm: LLM
    index: ProvisionIndex
    store: Store
    deduper: Deduper
    k: int = 5
    """Provisions retrieved per item (the draft schema's enum of citable ids)."""
    gates: GateConfig = field(default_factory=GateConfig)
    searches: dict[tuple[str, int], list[Any]] = field(default_factory=dict, repr=False)
    """Index answers of this run by (query, k): items sharing a (scene, seed norm) ask the same
    query, and the index is fixed for the run."""
