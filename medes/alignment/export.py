"""Export judged records as TRL-ready datasets, with provenance columns beside the training columns.

Row builders are pure functions from records (medes/records.py) to dicts in TRL's documented dataset
formats (TRL 1.16, "Dataset formats and types"), all conversational so the trainer applies the model's
own chat template:

- SFT, language modelling:  ``{"messages": [system?, user, assistant]}``
- SFT, prompt-completion:   ``{"prompt": [system?, user], "completion": [assistant]}``
- preference (DPO), explicit prompt: ``{"prompt": [system?, user], "chosen": [assistant], "rejected": [assistant]}``
- unpaired preference (KTO): ``{"prompt": [system?, user], "completion": [assistant], "label": bool}``

Every row also carries where it came from (scenario and family ids, scene, norm ids, scores, model
ids, prompt hashes) so a trained behaviour can be traced back to the prompts and models that made it.
TRL ignores the extra columns once tokenized; `medes.alignment.train` selects the training columns.

`export_run` splits by scenario family (a scenario and its mutations never straddle splits) and
writes JSONL, Parquet, a `datasets.DatasetDict` on disk, a dataset card, LLaMA-Factory
`dataset_info.json` entries and Axolotl dataset stanzas.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medes.records import Judgment, PreferencePair, Response, Scenario, now_utc

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
KINDS: tuple[str, ...] = ("sft", "sft_prompt_completion", "preference", "unpaired")
FORMATS: tuple[str, ...] = ("jsonl", "parquet", "hf")

DEFAULT_SYSTEM_PROMPT = (
    "你是一名熟悉中国医学伦理规范和卫生法律法规的医疗助手。"
    "请识别情境中的伦理与法律问题，引用相关规范，给出安全、可操作的建议，并体现对患者和家属的关怀。"
)
"""Names the four MedES quality dimensions (Q1–Q4) so the trained model sees what it is scored on."""

Message = dict[str, str]
Row = dict[str, Any]


PASS_THRESHOLD = 0.7
"""Default minimum MedES `final` for an answer to be imitated; the align loop's default threshold."""


def passes(judgment: Judgment, min_final: float = 0.0) -> bool:
    """Fit to imitate: a readable verdict, neither risk flag raised, and `final` ≥ `min_final`."""
    return judgment.valid and judgment.risky is False and (judgment.final or 0.0) >= min_final


def user_prompt(scenario: Scenario) -> str:
    """What the target model is asked: the situation, plus lettered options for objective items."""
    if scenario.kind == "objective" and scenario.options:
        options = "\n".join(f"{letter}. {text}" for letter, text in sorted(scenario.options.items()))
        return f"{scenario.query}\n{options}"
    return scenario.query


def prompt_messages(user: str, system_prompt: str | None) -> list[Message]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": user}]


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _scenario_columns(scenario: Scenario, family_id: str, prompt: list[Message]) -> Row:
    return {
        "scenario_id": scenario.id,
        "family_id": family_id,
        "scene": scenario.scene,
        "kind": scenario.kind,
        "norm_ids": list(scenario.norm_ids),
        "attack": list(scenario.attack),
        "scenario_run_id": scenario.provenance.run_id,
        "scenario_model_ids": list(scenario.provenance.model_ids),
        # JSON text, not a struct: template names vary between rows and Arrow needs one schema
        "scenario_prompt_hashes": json.dumps(
            scenario.provenance.prompt_hashes, ensure_ascii=False, sort_keys=True
        ),
        "prompt_sha256": _sha256(prompt),
    }


def _judgment_columns(judgment: Judgment, prefix: str = "") -> Row:
    return {
        f"{prefix}judgment_id": judgment.id,
        f"{prefix}judge": judgment.judge,
        f"{prefix}final": judgment.final,
        f"{prefix}risky": judgment.risky,
        f"{prefix}normative_violation": judgment.normative_violation,
        f"{prefix}unsafe_suggestion": judgment.unsafe_suggestion,
        f"{prefix}issue_identification": judgment.issue_identification,
        f"{prefix}norm_citation": judgment.norm_citation,
        f"{prefix}actionable_advice": judgment.actionable_advice,
        f"{prefix}empathy": judgment.empathy,
        f"{prefix}cited_norm_ids": list(judgment.cited_norm_ids),
    }


def _response_columns(response: Response) -> Row:
    return {
        "response_id": response.id,
        "response_model_id": response.model_id,
        "response_round": response.round,
        "response_run_id": response.run_id,
    }


def _check_triple(scenario: Scenario, response: Response, judgment: Judgment) -> None:
    if response.scenario_id != scenario.id:
        raise ValueError(f"response {response.id} answers {response.scenario_id}, not scenario {scenario.id}")
    if judgment.response_id != response.id:
        raise ValueError(f"judgment {judgment.id} judges {judgment.response_id}, not response {response.id}")


def sft_messages_row(
    scenario: Scenario,
    response: Response,
    judgment: Judgment,
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    family_id: str | None = None,
) -> Row:
    """Conversational language-modelling row `{"messages": [...]}` from a passing response."""
    _check_triple(scenario, response, judgment)
    if not passes(judgment):
        raise ValueError(
            f"response {response.id} does not pass (judgment {judgment.id}: valid={judgment.valid}, "
            f"risky={judgment.risky}); only passing answers become SFT rows"
        )
    prompt = prompt_messages(user_prompt(scenario), system_prompt)
    return {
        "messages": [*prompt, *_assistant(response.text)],
        **_scenario_columns(scenario, family_id or scenario.family_id or scenario.id, prompt),
        **_response_columns(response),
        **_judgment_columns(judgment),
    }


def sft_prompt_completion_row(
    scenario: Scenario,
    response: Response,
    judgment: Judgment,
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    family_id: str | None = None,
) -> Row:
    """Conversational prompt-completion row: TRL then computes the loss on the completion only."""
    row = sft_messages_row(scenario, response, judgment, system_prompt=system_prompt, family_id=family_id)
    messages = row.pop("messages")
    return {"prompt": messages[:-1], "completion": messages[-1:], **row}


def preference_row(
    pair: PreferencePair,
    scenario: Scenario,
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    family_id: str | None = None,
) -> Row:
    """Explicit-prompt conversational preference row. A pair whose chosen side fails is refused."""
    if pair.scenario_id != scenario.id:
        raise ValueError(f"pair {pair.id} belongs to scenario {pair.scenario_id}, not {scenario.id}")
    if not passes(pair.chosen_judgment):
        raise ValueError(
            f"pair {pair.id}: the chosen response {pair.chosen_response_id} does not pass "
            f"(valid={pair.chosen_judgment.valid}, risky={pair.chosen_judgment.risky}); "
            "a preference pair must prefer a passing answer"
        )
    prompt = prompt_messages(pair.prompt, system_prompt)
    return {
        "prompt": prompt,
        "chosen": _assistant(pair.chosen),
        "rejected": _assistant(pair.rejected),
        **_scenario_columns(scenario, family_id or scenario.family_id or scenario.id, prompt),
        "pair_id": pair.id,
        "margin": pair.margin,
        "chosen_response_id": pair.chosen_response_id,
        "rejected_response_id": pair.rejected_response_id,
        "pair_model_ids": list(pair.provenance.model_ids),
        **_judgment_columns(pair.chosen_judgment, "chosen_"),
        **_judgment_columns(pair.rejected_judgment, "rejected_"),
    }


def unpaired_row(
    scenario: Scenario,
    response: Response,
    judgment: Judgment,
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    family_id: str | None = None,
    min_final: float = PASS_THRESHOLD,
) -> Row:
    """KTO row: any validly judged response, labelled desirable when it passes."""
    _check_triple(scenario, response, judgment)
    if not judgment.valid:
        raise ValueError(
            f"judgment {judgment.id} is invalid ({judgment.parse_error!r}); it cannot label a row"
        )
    prompt = prompt_messages(user_prompt(scenario), system_prompt)
    return {
        "prompt": prompt,
        "completion": _assistant(response.text),
        "label": passes(judgment, min_final),
        **_scenario_columns(scenario, family_id or scenario.family_id or scenario.id, prompt),
        **_response_columns(response),
        **_judgment_columns(judgment),
    }


# --- splits -------------------------------------------------------------------------------------


def family_of(scenario: Scenario, by_id: dict[str, Scenario]) -> str:
    """`family_id` when set, else the root reached through `parent_id` (older records lack the field)."""
    if scenario.family_id:
        return scenario.family_id
    seen = {scenario.id}
    node = scenario
    while node.parent_id and node.parent_id in by_id and node.parent_id not in seen:
        node = by_id[node.parent_id]
        if node.family_id:
            return node.family_id
        seen.add(node.id)
    return node.parent_id or node.id


def split_for(family_id: str, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> Split:
    """Deterministic split from a hash of (seed, family id): stable across runs, machines and row order."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    digest = hashlib.sha256(f"{seed}\x1f{family_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "validation"
    return "test"


# --- selecting rows from a run's records --------------------------------------------------------


def _latest_judgments(judgments: Iterable[Judgment]) -> dict[str, Judgment]:
    """One verdict per response: a re-judged response keeps its most recent verdict."""
    latest: dict[str, Judgment] = {}
    for j in judgments:
        if j.response_id not in latest or j.created_at >= latest[j.response_id].created_at:
            latest[j.response_id] = j
    return latest


def build_rows(
    scenarios: Sequence[Scenario],
    responses: Sequence[Response],
    judgments: Sequence[Judgment],
    pairs: Sequence[PreferencePair],
    *,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    min_final: float = PASS_THRESHOLD,
) -> dict[str, list[Row]]:
    """All four kinds of rows from one run's records.

    SFT keeps one answer per scenario: the passing response with the highest `final`, ties going to
    the latest revision round, so a scenario is not over-weighted by several near-identical answers.
    Unpaired (KTO) rows take every validly judged response. Every pair must prefer a passing answer.
    """
    by_id = {s.id: s for s in scenarios}
    families = {s.id: family_of(s, by_id) for s in scenarios}
    verdicts = _latest_judgments(judgments)

    def scenario_for(scenario_id: str, what: str) -> Scenario:
        if scenario_id not in by_id:
            raise KeyError(
                f"{what} refers to scenario {scenario_id}, which is not among the exported scenarios"
            )
        return by_id[scenario_id]

    best: dict[str, tuple[tuple[float, int], Response, Judgment]] = {}
    unpaired: list[Row] = []
    for r in responses:
        j = verdicts.get(r.id)
        if j is None or not j.valid:
            continue
        s = scenario_for(r.scenario_id, f"response {r.id}")
        unpaired.append(
            unpaired_row(s, r, j, system_prompt=system_prompt, family_id=families[s.id], min_final=min_final)
        )
        if passes(j, min_final):
            key = (float(j.final or 0.0), r.round)
            if s.id not in best or key > best[s.id][0]:
                best[s.id] = (key, r, j)

    sft, sft_pc = [], []
    for scenario_id, (_, r, j) in sorted(best.items()):
        s = by_id[scenario_id]
        sft.append(sft_messages_row(s, r, j, system_prompt=system_prompt, family_id=families[s.id]))
        sft_pc.append(
            sft_prompt_completion_row(s, r, j, system_prompt=system_prompt, family_id=families[s.id])
        )
    preference = [
        preference_row(
            p,
            scenario_for(p.scenario_id, f"pair {p.id}"),
            system_prompt=system_prompt,
            family_id=families[p.scenario_id],
        )
        for p in pairs
    ]
    return {"sft": sft, "sft_prompt_completion": sft_pc, "preference": preference, "unpaired": unpaired}


def split_rows(
    rows: Sequence[Row], seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[Split, list[Row]]:
    out: dict[Split, list[Row]] = {s: [] for s in SPLITS}
    for row in rows:
        out[split_for(row["family_id"], seed, fractions)].append(row)
    return out


# --- writers ------------------------------------------------------------------------------------


def write_jsonl(rows: Iterable[Row], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_parquet(rows: Sequence[Row], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return path


def write_dataset_dict(splits: dict[Split, list[Row]], path: Path) -> Path:
    """`datasets.load_from_disk(path)` gives a DatasetDict with the non-empty splits."""
    try:
        from datasets import Dataset, DatasetDict
    except ImportError as e:
        raise RuntimeError("the `hf` format needs the `datasets` package (pip install 'medes[train]')") from e
    DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items() if rows}).save_to_disk(
        str(path)
    )
    return path


def llamafactory_rows(kind: str, rows: Sequence[Row]) -> list[Row]:
    """LLaMA-Factory's sharegpt shapes where they differ from TRL's: single-message chosen/rejected
    dicts for ranking data, and one `messages` list with a boolean tag for KTO."""
    if kind == "preference":
        return [
            {"messages": r["prompt"], "chosen": r["chosen"][0], "rejected": r["rejected"][0]} for r in rows
        ]
    if kind == "unpaired":
        return [{"messages": r["prompt"] + r["completion"], "label": r["label"]} for r in rows]
    raise ValueError(f"no LLaMA-Factory sidecar for {kind!r}")


_LF_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def llamafactory_dataset_info(files: dict[str, dict[str, str]], name: str = "medes") -> dict[str, Any]:
    """`dataset_info.json` entries (sharegpt formatting, OpenAI-style tags); `files` maps kind → split →
    path relative to the export directory, which is what LLaMA-Factory's `dataset_dir` should point to."""
    info: dict[str, Any] = {}
    for kind, by_split in files.items():
        for split, rel in by_split.items():
            entry: dict[str, Any] = {"file_name": rel, "formatting": "sharegpt", "tags": dict(_LF_TAGS)}
            if kind == "sft":
                entry["columns"] = {"messages": "messages"}
            elif kind == "preference":
                entry["ranking"] = True
                entry["columns"] = {"messages": "messages", "chosen": "chosen", "rejected": "rejected"}
            elif kind == "unpaired":
                entry["columns"] = {"messages": "messages", "kto_tag": "label"}
            else:
                continue
            info[f"{name}_{kind}_{split}"] = entry
    return info


def axolotl_stanzas(files: dict[str, dict[str, Path]]) -> dict[str, dict[str, Any]]:
    """Dataset sections to merge into an Axolotl config: `sft` (type chat_template on `messages`) and
    `dpo` (rl: dpo, chat_template.default reading our explicit prompt; it takes the last message of a
    chosen/rejected list)."""
    stanzas: dict[str, dict[str, Any]] = {}
    mapping = {"role": "role", "content": "content"}
    if "sft" in files:
        sft = files["sft"]

        def sft_ds(path: Path) -> dict[str, Any]:
            return {
                "path": str(path),
                "ds_type": "json",
                "split": "train",
                "type": "chat_template",
                "field_messages": "messages",
                "message_property_mappings": mapping,
                "roles_to_train": ["assistant"],
            }

        stanzas["sft"] = {"datasets": [sft_ds(sft["train"])]} if "train" in sft else {}
        if "validation" in sft:
            stanzas["sft"]["test_datasets"] = [sft_ds(sft["validation"])]
    if "preference" in files and "train" in files["preference"]:
        stanzas["dpo"] = {
            "rl": "dpo",
            "datasets": [
                {
                    "path": str(files["preference"]["train"]),
                    "ds_type": "json",
                    "split": "train",
                    "type": "chat_template.default",
                    "field_messages": "prompt",
                    "field_chosen": "chosen",
                    "field_rejected": "rejected",
                    "message_property_mappings": mapping,
                }
            ],
        }
    return stanzas


def dataset_card(
    counts: dict[str, dict[str, int]],
    rows: dict[str, list[Row]],
    *,
    run_id: str,
    seed: int,
    fractions: Sequence[float],
    system_prompt: str | None,
    has_parquet: bool,
) -> str:
    """README.md with Hub front matter (configs pointing at the Parquet files), counts and provenance."""
    front: dict[str, Any] = {
        "language": ["zh"],
        "license": "other",
        "task_categories": ["text-generation"],
        "tags": ["medical", "ethics", "alignment", "sft", "dpo", "kto", "medes"],
        "pretty_name": "MedES-style medical-ethics alignment data",
    }
    if has_parquet:
        front["configs"] = [
            {
                "config_name": kind,
                "data_files": [
                    {"split": split, "path": f"{kind}/{split}.parquet"} for split, n in by_split.items() if n
                ],
            }
            for kind, by_split in counts.items()
            if any(by_split.values())
        ]
    lines = ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False).strip(), "---", ""]
    lines += [
        "# MedES-style medical-ethics alignment data",
        "",
        f"Exported by `medes export` from run `{run_id or '(records given directly)'}` on "
        f"{now_utc().date().isoformat()}.",
        "",
        "## Files",
        "",
        "| kind | TRL format | train | validation | test |",
        "|---|---|---|---|---|",
    ]
    formats = {
        "sft": "conversational language modelling (`messages`)",
        "sft_prompt_completion": "conversational prompt-completion",
        "preference": "conversational preference, explicit prompt",
        "unpaired": "conversational unpaired preference (KTO, `label`)",
    }
    for kind, by_split in counts.items():
        lines.append(
            f"| `{kind}` | {formats[kind]} | " + " | ".join(str(by_split.get(s, 0)) for s in SPLITS) + " |"
        )
    lines += [
        "",
        "Each kind lives in `<kind>/<split>.jsonl` (and `.parquet`, and `<kind>/hf/` for `datasets.load_from_disk`).",
        "Empty splits are not written. `dataset_info.json` (LLaMA-Factory, sidecar files in `llamafactory/`) and",
        "`axolotl_sft.yaml` / `axolotl_dpo.yaml` (Axolotl dataset stanzas) point at the same data.",
        "",
        "## How it was made",
        "",
        "Scenarios are first-person clinical or research situations that engage Chinese medical norms (MedES",
        "method). A target model answered them; a guardian judged each answer on the MedES rubric (R1 normative",
        "violation, R2 unsafe suggestion; Q1 issue identification, Q2 norm citation, Q3 actionable advice, Q4",
        "empathy). Failing answers were revised with the guardian's feedback and re-judged.",
        "",
        "- SFT: one passing answer per scenario (highest MedES `final`, ties to the latest revision).",
        "- Preference: a passing answer (chosen) against a failing or weaker one (rejected); pairs whose chosen",
        "  side does not pass are refused at export.",
        "- Unpaired: every validly judged answer, `label` = passes (valid verdict, neither risk flag).",
        f"- Splits by scenario family (a scenario and its mutations stay together): sha256(seed, family id) with "
        f"seed {seed}, fractions {list(fractions)}.",
        f"- System prompt: {system_prompt!r}." if system_prompt else "- No system prompt.",
        "",
        "Provenance columns on every row: `scenario_id`, `family_id`, `scene`, `norm_ids`, `attack`, model ids,",
        "the judge, MedES scores, `scenario_prompt_hashes` (template → sha256) and `prompt_sha256`.",
        "",
    ]
    models = sorted(
        (
            {r.get("response_model_id", "") for rs in rows.values() for r in rs}
            | {m for rs in rows.values() for r in rs for m in r.get("scenario_model_ids", [])}
        )
        - {""}
    )
    judges = sorted(
        {
            r.get(k, "")
            for rs in rows.values()
            for r in rs
            for k in ("judge", "chosen_judge", "rejected_judge")
        }
        - {""}
    )
    lines += ["Models: " + (", ".join(f"`{m}`" for m in models) or "(none recorded)") + "  "]
    lines += ["Judges: " + (", ".join(f"`{j}`" for j in judges) or "(none recorded)"), ""]
    for title, key in (("scene", "scene"), ("norm", "norm_ids")):
        lines += [
            f"## Rows per {title}",
            "",
            f"| {title} | " + " | ".join(counts) + " |",
            "|---|" + "---|" * len(counts),
        ]
        per: dict[str, Counter[str]] = {kind: Counter() for kind in counts}
        for kind, rs in rows.items():
            for r in rs:
                per[kind].update(r[key] if isinstance(r[key], list) else [r[key]])
        for value in sorted(set().union(*per.values())):
            lines.append(f"| {value} | " + " | ".join(str(per[k][value]) for k in counts) + " |")
        lines.append("")
    lines += [
        "## Licence notes",
        "",
        "- Texts were generated by the models listed above; their use is subject to those models' terms.",
        "- Official texts of laws, regulations and state-organ decisions cited by id are not protected by copyright",
        "  (《中华人民共和国著作权法》第五条); professional codes and guidelines may be, and are cited by id only.",
        "- This is synthetic data for research on medical-ethics alignment, not medical or legal advice.",
        "",
    ]
    return "\n".join(lines)


def load_run_records(
    store: Any, run_id: str
) -> tuple[list[Scenario], list[Response], list[Judgment], list[PreferencePair]]:
    """A run's responses, judgments and pairs from a `medes.store.Store`, with the scenarios they answer
    (which usually come from an earlier generate run, hence looked up by id, not by run)."""
    responses = store.responses(run_id=run_id)
    judgments = store.judgments(run_id=run_id)
    pairs = store.pairs(run_id=run_id)
    if not (responses or pairs):
        raise LookupError(f"run {run_id!r} has no responses or pairs in the store")
    wanted = {r.scenario_id for r in responses} | {p.scenario_id for p in pairs}
    scenarios = [s for s in (store.scenario(i) for i in sorted(wanted)) if s is not None]
    missing = wanted - {s.id for s in scenarios}
    if missing:
        raise LookupError(
            f"run {run_id!r} refers to {len(missing)} scenarios missing from the store, e.g. {min(missing)}"
        )
    return scenarios, responses, judgments, pairs


@dataclass
class ExportResult:
    out_dir: Path
    counts: dict[str, dict[str, int]]
    """kind → split → rows written."""
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "counts": self.counts, "files": [str(p) for p in self.files]}


_OWN_FILES = ("README.md", "manifest.json", "dataset_info.json", "axolotl_sft.yaml", "axolotl_dpo.yaml")


def _clear_previous_export(out_dir: Path) -> None:
    """Remove what an earlier export wrote here (and nothing else), so a split that is now empty does
    not survive as a stale file that a training run would pick up."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (*KINDS, "llamafactory"):
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)
    for name in _OWN_FILES:
        (out_dir / name).unlink(missing_ok=True)


def export_run(
    scenarios: Sequence[Scenario],
    responses: Sequence[Response],
    judgments: Sequence[Judgment],
    pairs: Sequence[PreferencePair],
    out_dir: Path,
    *,
    run_id: str = "",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    formats: Sequence[str] = FORMATS,
    min_final: float = PASS_THRESHOLD,
) -> ExportResult:
    """Write every kind × split in the asked formats, plus card, tool configs and a manifest."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    out_dir = Path(out_dir)
    rows = build_rows(scenarios, responses, judgments, pairs, system_prompt=system_prompt, min_final=min_final)
    _clear_previous_export(out_dir)
    result = ExportResult(out_dir=out_dir, counts={})
    jsonl_files: dict[str, dict[str, Path]] = {}
    lf_files: dict[str, dict[str, str]] = {}
    for kind, kind_rows in rows.items():
        splits = split_rows(kind_rows, seed, fractions)
        result.counts[kind] = {s: len(splits[s]) for s in SPLITS}
        for split, split_rows_ in splits.items():
            if not split_rows_:
                continue
            if "jsonl" in formats:
                path = write_jsonl(split_rows_, out_dir / kind / f"{split}.jsonl")
                result.files.append(path)
                jsonl_files.setdefault(kind, {})[split] = path.resolve()
                if kind == "sft":
                    lf_files.setdefault(kind, {})[split] = f"{kind}/{split}.jsonl"
                elif kind in ("preference", "unpaired"):
                    side = write_jsonl(
                        llamafactory_rows(kind, split_rows_),
                        out_dir / "llamafactory" / f"{kind}_{split}.jsonl",
                    )
                    result.files.append(side)
                    lf_files.setdefault(kind, {})[split] = f"llamafactory/{kind}_{split}.jsonl"
            if "parquet" in formats:
                result.files.append(write_parquet(split_rows_, out_dir / kind / f"{split}.parquet"))
        if "hf" in formats and kind_rows:
            result.files.append(write_dataset_dict(splits, out_dir / kind / "hf"))

    if lf_files:
        info_path = out_dir / "dataset_info.json"
        info_path.write_text(
            json.dumps(llamafactory_dataset_info(lf_files), ensure_ascii=False, indent=2) + "\n", "utf-8"
        )
        result.files.append(info_path)
    for name, stanza in axolotl_stanzas(jsonl_files).items():
        if stanza:
            path = out_dir / f"axolotl_{name}.yaml"
            path.write_text(yaml.safe_dump(stanza, allow_unicode=True, sort_keys=False), "utf-8")
            result.files.append(path)
    card = out_dir / "README.md"
    card.write_text(
        dataset_card(
            result.counts,
            rows,
            run_id=run_id,
            seed=seed,
            fractions=fractions,
            system_prompt=system_prompt,
            has_parquet="parquet" in formats,
        ),
        "utf-8",
    )
    result.files.append(card)
    manifest = out_dir / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "run_id": run_id,
                "seed": seed,
                "fractions": list(fractions),
                "formats": list(formats),
                "system_prompt": system_prompt,
                "counts": result.counts,
                "inputs": {
                    "scenarios": len(scenarios),
                    "responses": len(responses),
                    "judgments": len(judgments),
                    "pairs": len(pairs),
                },
                "created_at": now_utc().isoformat(),
            },
            ensure_ascii=False,
            indent=2,
        )
        + "\n",
        "utf-8",
    )
    result.files.append(manifest)
    return result
