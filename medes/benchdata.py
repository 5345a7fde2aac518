"""Loaders for the external benchmark files (MedES sample, MedEthicEval, SafetyBench zh).

These files are never bundled: the user passes their path (tests and benches find them under
../shared). They are evaluation data — used to measure the guardian and the metrics, never as
prompt material inside the product. The CSVs are UTF-8 with BOM, CRLF records and LF inside
fields, so they are read with `encoding="utf-8-sig", newline=""` and the csv module.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from medes.metrics import LETTERS, letter_set
from medes.records import Response, Scenario, content_id

# Paths relative to the shared data root (../shared beside a clone).
MEDES_JUDGED = "benchmarks/medes_medethicalign_sample/data/subjective/subjective_sample_responses_judges.csv"
MEDES_QUESTIONS = "benchmarks/medes_medethicalign_sample/data/subjective/subjective_sample_questions.csv"
MEDES_OBJECTIVE = "benchmarks/medes_medethicalign_sample/data/objective/objective_sample_by_scene.csv"
MEDES_LEADERBOARD = "benchmarks/medes_medethicalign_sample/results/subjective_leaderboard.csv"
MEDETHICEVAL_KNOWLEDGE = "benchmarks/medethiceval/dataset/medical_ethics_knowledge.csv"
SAFETYBENCH_ZH = "benchmarks/safetybench_zh_health_ethics/safetybench_test_zh_subset_health_ethics.jsonl"


def read_csv(path: Path | str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def medes_scenario_id(sample_id: str, kind: str = "subjective") -> str:
    return f"medes-{'sub' if kind == 'subjective' else 'obj'}:{sample_id}"


def medes_response_id(scenario_id: str, model: str) -> str:
    return content_id("rsp", scenario_id, model)


def _score(cell: str) -> int | None:
    cell = cell.strip()
    return None if cell == "" else int(float(cell))


@dataclass(frozen=True)
class MedesJudgedRow:
    """One row of the MedES judged-responses file: scenario, response, the judge's texts and scores."""

    scenario: Scenario
    response: Response
    risk_judge: str
    quality_judge: str
    scores: tuple[int | None, ...]
    """score1..score6 as published (R1, R2, Q1..Q4); the authors write −1 for Q1..Q4 on risky rows."""
    risk_flag: bool
    final_score: float | None
    source_index: str

    @property
    def model(self) -> str:
        return self.response.model_id


def _subjective_scenario(row: dict[str, str]) -> Scenario:
    return Scenario(
        id=medes_scenario_id(row["sample_id"]),
        scene=row["scene"],
        query=row["query"],
        norm_ids=[],  # MedES states the norm in words only (`reference`)
        reference=row["reference"],
        kind="subjective",
        family_id=medes_scenario_id(row["sample_id"]),
    )


def load_medes_judged(path: Path | str) -> list[MedesJudgedRow]:
    """The 1,120 judged responses (140 scenarios × 8 models) of the MedES sample release."""
    out: list[MedesJudgedRow] = []
    for row in read_csv(path):
        scenario = _subjective_scenario(row)
        response = Response(
            id=medes_response_id(scenario.id, row["model"]),
            scenario_id=scenario.id,
            model_id=row["model"],
            text=row["response"],
        )
        final = row["final_score"].strip()
        out.append(
            MedesJudgedRow(
                scenario=scenario,
                response=response,
                risk_judge=row["risk_judge"],
                quality_judge=row["quality_judge"],
                scores=tuple(_score(row[f"score{i}"]) for i in range(1, 7)),
                risk_flag=row["risk_flag"].strip() == "True",
                final_score=float(final) if final else None,
                source_index=row["source_index"],
            )
        )
    return out


def load_medes_questions(path: Path | str) -> list[Scenario]:
    """The 140 subjective sample scenarios."""
    return [_subjective_scenario(row) for row in read_csv(path)]


@dataclass(frozen=True)
class McqItem:
    """A keyed multiple-choice item. `answer` is the sorted letter set (`"C"`, `"BD"`)."""

    id: str
    source: str
    question: str
    options: dict[str, str]
    answer: str
    category: str = ""


_OPTION_START = r"(?:^|(?<=[\n，,；;\s]))%s\s*[.．、:：]"


def _split_options(block: str) -> tuple[str, dict[str, str]]:
    """Question stem and `letter → text` from a block with options `A.… B.…` (one per line or inline).

    Letters are looked for in order (A, then B after it, …) so a stray `C.` inside a stem or an
    option text does not start a new option.
    """
    starts: list[tuple[str, int, int]] = []
    pos = 0
    for letter in LETTERS:
        m = re.compile(_OPTION_START % letter, re.MULTILINE).search(block, pos)
        if m is None:
            break
        starts.append((letter, m.start(), m.end()))
        pos = m.end()
    options: dict[str, str] = {}
    for i, (letter, _, end) in enumerate(starts):
        stop = starts[i + 1][1] if i + 1 < len(starts) else len(block)
        options[letter] = block[end:stop].strip().rstrip("，,；;").strip()
    stem = block[: starts[0][1]].strip() if starts else block.strip()
    return stem, options


def load_medes_objective(path: Path | str) -> list[McqItem]:
    """MedES objective sample (110 multi-select items); the question is the last `题目：` in the prompt."""
    items: list[McqItem] = []
    for row in read_csv(path):
        query = row["query"]
        block = query.rsplit("题目：", 1)[-1].split("【思考过程】", 1)[0]
        stem, options = _split_options(block)
        if len(options) < 2:
            raise ValueError(f"MedES objective {row['sample_id']}: could not read its options")
        items.append(
            McqItem(
                id=medes_scenario_id(row["sample_id"], "objective"),
                source="medes-objective",
                question=stem,
                options=options,
                answer=letter_set(row["reference"]),
                category=row["scene"],
            )
        )
    return items


def load_medethiceval_knowledge(path: Path | str) -> list[McqItem]:
    """MedEthicEval knowledge MCQs (629, single answer). `options` is a Python list literal."""
    items: list[McqItem] = []
    for row in read_csv(path):
        raw_options = ast.literal_eval(row["options"])
        _, options = _split_options("\n".join(raw_options))
        if len(options) != len(raw_options):
            raise ValueError(f"MedEthicEval {row['uuid']}: unexpected option format {raw_options!r}")
        items.append(
            McqItem(
                id=f"medethiceval:{row['uuid']}",
                source="medethiceval-knowledge",
                question=row["question"].strip(),
                options=options,
                answer=letter_set(row["answer"]),
                category=row.get("other", ""),
            )
        )
    return items


def load_safetybench(path: Path | str) -> list[McqItem]:
    """SafetyBench zh health/ethics slice (1,200 items, 2–4 options, one correct)."""
    items: list[McqItem] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            options = {LETTERS[i]: text for i, text in enumerate(row["options"])}
            items.append(
                McqItem(
                    id=f"safetybench:{row['id']}",
                    source="safetybench-zh",
                    question=row["question"].strip(),
                    options=options,
                    answer=row["answer_letter"],
                    category=row["category"],
                )
            )
    return items


@dataclass(frozen=True)
class OptionPair:
    """(question, one candidate answer, is it keyed correct?) — the external proxy for 'is this answer wrong'."""

    item_id: str
    source: str
    question: str
    option: str
    correct: bool


def option_pairs(items: list[McqItem]) -> Iterator[OptionPair]:
    for item in items:
        for letter, text in item.options.items():
            yield OptionPair(item.id, item.source, item.question, text, letter in item.answer)
