"""The coherence gates never reject a real MedES scenario (calibration against the authors' sample)."""

import csv

from medes.agents.gates import GateConfig, _coherence
from medes.records import Scenario
from tests.support.shared import shared_path


def test_no_medes_sample_item_fails_the_coherence_gates():
    path = shared_path(
        "benchmarks", "medes_medethicalign_sample", "data", "subjective", "subjective_sample_questions.csv"
    )
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 140
    flagged = []
    for r in rows:
        s = Scenario(
            id=r["sample_id"],
            scene=r["scene"],
            query=r["query"],
            norm_ids=["x#第一条"],
            reference=r["reference"],
        )
        if failures := _coherence(s, GateConfig()):
            flagged.append((r["sample_id"], failures))
    assert flagged == []


def test_no_medes_sample_query_echoes_the_drafting_or_mutation_instructions():
    """The echo gate's 12-character run is far from what real scenarios share with our prompts."""
    from medes.agents.drafter import draft_instructions
    from medes.agents.gates import shares_substring
    from medes.agents.mutator import mutate_instructions
    from medes.records import MEDES_SCENES, MUTATION_OPERATORS

    path = shared_path(
        "benchmarks", "medes_medethicalign_sample", "data", "subjective", "subjective_sample_questions.csv"
    )
    with path.open(encoding="utf-8-sig", newline="") as f:
        queries = [r["query"] for r in csv.DictReader(f)]
    told = [draft_instructions(scene, "subjective") for scene in MEDES_SCENES]
    told += [mutate_instructions(op) for op in MUTATION_OPERATORS]
    echoes = [
        (q[:30], run)
        for q in queries
        for t in told
        if (run := shares_substring(q, t, GateConfig().echo_chars))
    ]
    assert echoes == []
