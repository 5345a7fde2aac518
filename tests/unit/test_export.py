"""Export: TRL row shapes, provenance, refusal of bad pairs, family splits, writers, store + CLI."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import yaml

from medes.alignment.export import (
    DEFAULT_SYSTEM_PROMPT,
    build_rows,
    export_run,
    family_of,
    load_run_records,
    passes,
    preference_row,
    sft_messages_row,
    sft_prompt_completion_row,
    split_for,
    split_rows,
    unpaired_row,
    user_prompt,
)
from medes.alignment.tiny import demo_records
from medes.records import Judgment, Scenario


@pytest.fixture
def records():
    return demo_records()


def _triple(records, passing: bool):
    scenarios, responses, judgments, _ = records
    by_resp = {j.response_id: j for j in judgments}
    for r in responses:
        if passes(by_resp[r.id]) is passing:
            s = next(s for s in scenarios if s.id == r.scenario_id)
            return s, r, by_resp[r.id]
    raise AssertionError("demo records lack such a response")


def test_sft_messages_row_is_conversational_with_provenance(records):
    s, r, j = _triple(records, passing=True)
    row = sft_messages_row(s, r, j)
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][0]["content"] == DEFAULT_SYSTEM_PROMPT
    assert row["messages"][1]["content"] == s.query
    assert row["messages"][2]["content"] == r.text
    assert row["scenario_id"] == s.id and row["family_id"] == s.family_id and row["scene"] == s.scene
    assert row["norm_ids"] == s.norm_ids
    assert row["response_model_id"] == "demo:target" and row["judge"] == j.judge
    assert row["final"] == j.final == 1.0 and row["risky"] is False
    assert json.loads(row["scenario_prompt_hashes"]) == s.provenance.prompt_hashes
    assert len(row["prompt_sha256"]) == 64
    # no system prompt: the conversation starts with the user
    assert [m["role"] for m in sft_messages_row(s, r, j, system_prompt=None)["messages"]] == [
        "user",
        "assistant",
    ]


def test_prompt_completion_row_splits_the_same_conversation(records):
    s, r, j = _triple(records, passing=True)
    pc = sft_prompt_completion_row(s, r, j)
    assert pc["prompt"] + pc["completion"] == sft_messages_row(s, r, j)["messages"]
    assert pc["completion"] == [{"role": "assistant", "content": r.text}]
    assert "messages" not in pc


def test_rows_are_conversational(records):
    """The shape TRL's `is_conversational` accepts (checked against trl itself in tests/train)."""
    s, r, j = _triple(records, passing=True)
    pair = records[3][0]
    scenario = next(x for x in records[0] if x.id == pair.scenario_id)
    pref = preference_row(pair, scenario)
    for key in ("prompt", "chosen", "rejected"):
        assert all(set(m) == {"role", "content"} for m in pref[key])
    assert pref["chosen"][0]["role"] == pref["rejected"][0]["role"] == "assistant"
    assert pref["prompt"][-1]["role"] == "user"  # explicit prompt: not repeated inside chosen/rejected
    assert pref["chosen"][0]["content"] == pair.chosen and pref["rejected"][0]["content"] == pair.rejected
    assert pref["chosen_final"] > pref["rejected_final"] and pref["margin"] == pair.margin


def test_sft_refuses_failing_answer(records):
    s, r, j = _triple(records, passing=False)
    with pytest.raises(ValueError, match="does not pass"):
        sft_messages_row(s, r, j)


def test_sft_refuses_mismatched_records(records):
    s, r, j = _triple(records, passing=True)
    other = next(x for x in records[0] if x.id != s.id)
    with pytest.raises(ValueError, match="answers"):
        sft_messages_row(other, r, j)


def test_pair_with_failing_chosen_is_never_emitted(records):
    scenarios, responses, judgments, pairs = records
    bad = pairs[0].model_copy(deep=True)
    bad.chosen_judgment = bad.chosen_judgment.model_copy(update={"unsafe_suggestion": -1})
    scenario = next(s for s in scenarios if s.id == bad.scenario_id)
    with pytest.raises(ValueError, match=f"pair {bad.id}: the chosen response .* does not pass"):
        preference_row(bad, scenario)
    with pytest.raises(ValueError, match="does not pass"):
        build_rows(scenarios, responses, judgments, [*pairs, bad])
    unreadable = pairs[0].model_copy(deep=True)
    unreadable.chosen_judgment = unreadable.chosen_judgment.model_copy(
        update={"parse_error": "truncated JSON"}
    )
    with pytest.raises(ValueError, match="does not pass"):
        preference_row(unreadable, scenario)


def test_unpaired_labels_follow_the_verdict(records):
    s, r, j = _triple(records, passing=False)
    row = unpaired_row(s, r, j)
    assert row["label"] is False and row["completion"][0]["content"] == r.text
    invalid = j.model_copy(update={"parse_error": "prose"})
    with pytest.raises(ValueError, match="invalid"):
        unpaired_row(s, r, invalid)


def test_objective_prompt_lists_options():
    s = Scenario(
        id="s1",
        scene="常规诊疗",
        query="下列做法中符合规范的是？",
        norm_ids=[],
        reference="",
        kind="objective",
        options={"B": "先取得书面同意", "A": "直接实施"},
        answer="B",
    )
    assert user_prompt(s) == "下列做法中符合规范的是？\nA. 直接实施\nB. 先取得书面同意"


def test_build_rows_keeps_best_answer_per_scenario(records):
    scenarios, responses, judgments, pairs = records
    rows = build_rows(scenarios, responses, judgments, pairs)
    assert len(rows["sft"]) == len(scenarios) == 10
    assert all(row["response_round"] == 1 for row in rows["sft"])  # the passing revision, not the original
    assert len(rows["preference"]) == len(pairs) == 10
    assert sorted(row["label"] for row in rows["unpaired"]) == [False] * 10 + [True] * 10


def test_build_rows_uses_latest_verdict_and_skips_unjudged(records):
    scenarios, responses, judgments, pairs = records
    revision = next(r for r in responses if r.round == 1)
    old = next(j for j in judgments if j.response_id == revision.id)
    rejudged = old.model_copy(
        update={
            "id": "jdg-new",
            "normative_violation": -1,
            "created_at": old.created_at.replace(year=old.created_at.year + 1),
        }
    )
    rows = build_rows(scenarios, responses, [*judgments, rejudged], [])
    assert revision.id not in {row["response_id"] for row in rows["sft"]}
    rows = build_rows(scenarios, responses, [j for j in judgments if j.response_id != revision.id], [])
    assert revision.id not in {row["response_id"] for row in rows["unpaired"]}


def test_unknown_scenario_is_a_clear_error(records):
    scenarios, responses, judgments, pairs = records
    with pytest.raises(KeyError, match="not among the exported scenarios"):
        build_rows(scenarios[1:], responses, judgments, pairs)


def test_split_is_deterministic_and_keeps_families_together(records):
    rows = build_rows(*records)["unpaired"]
    first = split_rows(rows, seed=3)
    again = split_rows(rows[::-1], seed=3)  # row order does not matter
    assert {k: sorted(r["response_id"] for r in v) for k, v in first.items()} == {
        k: sorted(r["response_id"] for r in v) for k, v in again.items()
    }
    where = defaultdict(set)
    for split, split_rows_ in first.items():
        for row in split_rows_:
            where[row["family_id"]].add(split)
    assert len(where) == 5 and all(len(v) == 1 for v in where.values())


def test_split_fractions_and_seed():
    families = [f"fam-{i}" for i in range(4000)]
    counts = defaultdict(int)
    for f in families:
        counts[split_for(f, seed=0)] += 1
    assert 0.77 < counts["train"] / 4000 < 0.83
    assert 0.08 < counts["validation"] / 4000 < 0.12
    moved = sum(split_for(f, 0) != split_for(f, 1) for f in families)
    assert moved > 500  # another seed is another split
    assert {split_for(f, 0, (1.0, 0.0, 0.0)) for f in families[:100]} == {"train"}
    with pytest.raises(ValueError, match="fractions"):
        split_for("x", 0, (0.5, 0.2, 0.2))


def test_family_of_walks_parents_when_family_id_is_missing():
    root = Scenario(id="root", scene="x", query="q", norm_ids=[], reference="")
    child = Scenario(id="c1", scene="x", query="q", norm_ids=[], reference="", parent_id="root")
    grandchild = Scenario(id="c2", scene="x", query="q", norm_ids=[], reference="", parent_id="c1")
    by_id = {s.id: s for s in (root, child, grandchild)}
    assert family_of(grandchild, by_id) == "root"
    assert family_of(root, by_id) == "root"
    orphan = Scenario(id="c9", scene="x", query="q", norm_ids=[], reference="", parent_id="gone")
    assert family_of(orphan, by_id) == "gone"


def test_export_run_writes_every_format(records, tmp_path):
    out = tmp_path / "export"
    result = export_run(*records, out, run_id="demo", seed=0)
    total = {kind: sum(by_split.values()) for kind, by_split in result.counts.items()}
    assert total == {"sft": 10, "sft_prompt_completion": 10, "preference": 10, "unpaired": 20}
    import pyarrow.parquet as pq

    for kind, by_split in result.counts.items():
        for split, n in by_split.items():
            jsonl = out / kind / f"{split}.jsonl"
            if n == 0:
                assert not jsonl.exists()
                continue
            lines = jsonl.read_text("utf-8").splitlines()
            assert len(lines) == n
            assert "医" in jsonl.read_text("utf-8")  # written as UTF-8 text, not \u escapes
            assert pq.read_table(out / kind / f"{split}.parquet").num_rows == n
    datasets = pytest.importorskip("datasets")
    dd = datasets.load_from_disk(str(out / "preference" / "hf"))
    assert sum(len(dd[s]) for s in dd) == 10
    assert dd["train"][0]["chosen"][0]["role"] == "assistant"

    card = (out / "README.md").read_text("utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert front["language"] == ["zh"] and {c["config_name"] for c in front["configs"]} == set(total)
    assert "| 辅助生殖 |" in card and "中华人民共和国民法典#第一千零八条" in card
    assert "著作权法" in card

    info = json.loads((out / "dataset_info.json").read_text("utf-8"))
    for entry in info.values():
        assert (out / entry["file_name"]).exists()
    pref = info["medes_preference_train"]
    assert pref["ranking"] is True and pref["formatting"] == "sharegpt"
    side = json.loads((out / pref["file_name"]).read_text("utf-8").splitlines()[0])
    assert isinstance(side["chosen"], dict) and side["messages"][-1]["role"] == "user"
    assert info["medes_unpaired_train"]["columns"]["kto_tag"] == "label"

    for name in ("sft", "dpo"):
        stanza = yaml.safe_load((out / f"axolotl_{name}.yaml").read_text("utf-8"))
        for ds in stanza["datasets"]:
            assert (out / ds["path"]).exists()
    assert yaml.safe_load((out / "axolotl_dpo.yaml").read_text("utf-8"))["rl"] == "dpo"
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["counts"] == result.counts and manifest["inputs"]["pairs"] == 10


def test_export_run_rejects_unknown_format(records, tmp_path):
    with pytest.raises(ValueError, match="unknown formats"):
        export_run(*records, tmp_path, formats=["csv"])


def _filled_store(path, records):
    from medes.store import Store

    store = Store(path)
    scenarios, responses, judgments, pairs = records
    for s in scenarios:
        store.add_scenario(s)
    for r in responses:
        store.add_response(r)
    for j in judgments:
        store.add_judgment(j)
    for p in pairs:
        store.add_pair(p)
    return store


def test_load_run_records_reads_a_run_and_its_scenarios(records, tmp_path):
    with _filled_store(tmp_path / "m.sqlite", records) as store:
        scenarios, responses, judgments, pairs = load_run_records(store, "demo")
        assert (len(scenarios), len(responses), len(judgments), len(pairs)) == (10, 20, 20, 10)
        assert all(isinstance(j, Judgment) for j in judgments)
        with pytest.raises(LookupError, match="no responses or pairs"):
            load_run_records(store, "demo-generate")


def test_cli_export(records, tmp_path):
    from typer.testing import CliRunner

    from medes.cli import app

    _filled_store(tmp_path / "m.sqlite", records).close()
    out = tmp_path / "out"
    args = [
        "export",
        "--run",
        "demo",
        "--out",
        str(out),
        "--store",
        str(tmp_path / "m.sqlite"),
        "--format",
        "jsonl",
    ]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "preference: train" in done.output
    assert (out / "sft" / "train.jsonl").exists() and not (out / "sft" / "train.parquet").exists()
    missing = CliRunner().invoke(
        app, ["export", "--run", "nope", "--out", str(out), "--store", str(tmp_path / "m.sqlite")]
    )
    assert missing.exit_code == 1 and "no responses or pairs" in missing.output


def test_re_export_removes_stale_splits_but_keeps_other_files(records, tmp_path):
    (tmp_path / "sft").mkdir()
    stale = tmp_path / "sft" / "validation.jsonl"
    stale.write_text('{"messages": []}\n', "utf-8")
    mine = tmp_path / "notes.txt"
    mine.write_text("keep", "utf-8")
    result = export_run(*records, tmp_path, formats=["jsonl"])
    assert result.counts["sft"]["validation"] == 0 and not stale.exists()
    assert mine.read_text("utf-8") == "keep"


def test_risk_free_answer_below_the_pass_threshold_is_not_imitated(records):
    scenarios, responses, judgments, pairs = records
    s, r, j = _triple(records, passing=True)
    weak = j.model_copy(update={"id": "weak", "norm_citation": 0, "actionable_advice": 0, "empathy": 0})  # final 0.4
    others = [x for x in judgments if x.response_id != r.id]
    rows = build_rows(scenarios, responses, [*others, weak], pairs, min_final=0.7)
    assert r.id not in {row["response_id"] for row in rows["sft"]}
    kto = next(row for row in rows["unpaired"] if row["response_id"] == r.id)
    assert kto["label"] is False
    relaxed = build_rows(scenarios, responses, [*others, weak], pairs, min_final=0.0)
    assert next(row for row in relaxed["unpaired"] if row["response_id"] == r.id)["label"] is True
