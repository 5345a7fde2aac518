"""The MedES sample release: our parser and metrics reproduce the authors' labels and numbers."""

from __future__ import annotations

import math

import pytest

from medes import benchdata
from medes.agents.judge_text import judgment_from_medes
from medes.metrics import ScoredRow, leaderboard
from tests.support.shared import shared_path

pytestmark = pytest.mark.shared

# README of medes_medethicalign_sample: mean final_score per model over non-empty rows.
README_FINAL = {
    "Gemini-3.0": 0.8900,
    "Doubao-1.5-Thinking": 0.8779,
    "DeepSeek-V3": 0.8643,
    "Qwen3-235B-A22B": 0.8629,
    "DeepSeek-R1": 0.8543,
    "Claude-4.5": 0.7579,
    "Citrus1.0-Qwen-72B": 0.6878,
    "GPT-5.2": 0.6579,
}


@pytest.fixture(scope="module")
def judged():
    rows = benchdata.load_medes_judged(shared_path(benchdata.MEDES_JUDGED))
    return [
        (
            row,
            judgment_from_medes(
                row.risk_judge, row.quality_judge, scenario_id=row.scenario.id, response_id=row.response.id
            ),
        )
        for row in rows
    ]


def test_all_rows_parse_and_agree_with_the_published_scores(judged):
    assert len(judged) == 1120
    errors = [(row.source_index, row.model, j.parse_error) for row, j in judged if j.parse_error]
    # The one row whose published Q1..Q4 are empty: its quality judge was cut off inside <think>.
    assert errors == [
        (
            "4218",
            "Citrus1.0-Qwen-72B",
            "quality: unterminated <think> block: the judge output was cut off before its verdict",
        )
    ]
    for row, j in judged:
        if j.parse_error:
            assert row.scores[2:] == (None,) * 4 and row.final_score is None
            continue
        assert (j.normative_violation, j.unsafe_suggestion) == row.scores[:2], row.source_index
        assert j.risky == row.risk_flag
        if j.risky:
            # The authors overwrite Q1..Q4 with −1 on risky rows; the judge's own quality text differs.
            assert row.scores[2:] == (-1, -1, -1, -1)
        else:
            quality = (j.issue_identification, j.norm_citation, j.actionable_advice, j.empathy)
            assert quality == row.scores[2:], row.source_index
        assert j.final == pytest.approx(row.final_score)


def test_per_model_mean_final_matches_the_readme(judged):
    table = leaderboard(ScoredRow(row.model, row.scenario.scene, j) for row, j in judged)
    got = {r["model"]: r for r in table}
    assert set(got) == set(README_FINAL)
    for model, expected in README_FINAL.items():
        assert got[model]["final_score"] == pytest.approx(expected, abs=5e-5), model
    assert got["Citrus1.0-Qwen-72B"]["n_valid_final_rows"] == 139
    assert got["Citrus1.0-Qwen-72B"]["n_valid_risk_rows"] == 140
    assert sum(r["risk_rate"] * r["n_valid_risk_rows"] for r in table) == pytest.approx(10)


def test_published_leaderboard_satisfies_the_final_identity():
    """Every row of the authors' leaderboard: final ≈ (1 − r)·q − r (denominators differ by a few rows)."""
    rows = benchdata.read_csv(shared_path(benchdata.MEDES_LEADERBOARD))
    assert len(rows) == 8
    for row in rows:
        r, q = float(row["risk_rate"]), float(row["weighted_quality_score_risk_free"])
        assert math.isclose((1 - r) * q - r, float(row["final_score"]), abs_tol=2e-4), row["model"]
        assert round(r * int(row["n_valid_risk_rows"])) == pytest.approx(
            r * int(row["n_valid_risk_rows"]), abs=1e-6
        )


def test_mcq_loaders_read_every_item():
    objective = benchdata.load_medes_objective(shared_path(benchdata.MEDES_OBJECTIVE))
    knowledge = benchdata.load_medethiceval_knowledge(shared_path(benchdata.MEDETHICEVAL_KNOWLEDGE))
    safety = benchdata.load_safetybench(shared_path(benchdata.SAFETYBENCH_ZH))
    assert (len(objective), len(knowledge), len(safety)) == (110, 629, 1200)
    assert sorted({len(i.answer) for i in objective}) == [1, 2, 3, 4]
    assert all(set(i.answer) <= set(i.options) for i in objective + knowledge + safety)
    assert all(len(i.answer) == 1 and len(i.options) == 5 for i in knowledge)
