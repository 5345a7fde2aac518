"""`medes index build|add|info` and `medes search`: the CLI contract other tools rely on."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from medes.cli import app

runner = CliRunner()

PACK_YAML = """id: test-pack
name: 测试包
sources:
  - file: 医师法.md
    title: 中华人民共和国医师法
    level: 法律
"""
LAW = """# 中华人民共和国医师法

## 第三章 执业规则

第二十七条 对需要紧急救治的患者，医师应当采取紧急措施进行诊治，不得拒绝急救处置。

第二十三条 医师应当尊重、关心、爱护患者，依法保护患者隐私和个人信息。
"""
EXTRA = """# 中华人民共和国献血法

第十一条 无偿献血的血液必须用于临床，不得买卖。
"""


def _pack(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "pack.yaml").write_text(PACK_YAML, encoding="utf-8")
    (pack / "医师法.md").write_text(LAW, encoding="utf-8")
    return pack


def _build(tmp_path, *extra: str):
    out = tmp_path / "idx"
    result = runner.invoke(
        app,
        [
            "index",
            "build",
            "--corpus",
            str(_pack(tmp_path)),
            "--out",
            str(out),
            "--embedder",
            "hash:64",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_build_then_search_json_has_exactly_the_contract_keys(tmp_path, medes_home):
    out = _build(tmp_path)
    result = runner.invoke(app, ["search", "患者隐私", "--index", str(out), "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    assert all(set(r) == {"id", "title", "article", "text", "score"} for r in rows)
    assert rows[0]["id"] == "中华人民共和国医师法#第二十三条"
    assert rows[0]["title"] == "中华人民共和国医师法" and rows[0]["article"] == "第二十三条"
    assert "隐私" in result.stdout  # ensure_ascii=False: Chinese stays readable


def test_queries_file_answers_many_with_query_ids(tmp_path, medes_home):
    out = _build(tmp_path)
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"id": "a", "query": "急救"}\n\n{"id": "b", "query": "隐私"}\n', encoding="utf-8")
    result = runner.invoke(app, ["search", "--queries", str(qfile), "--index", str(out), "-k", "1", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["query_id"], r["article"]) for r in rows] == [("a", "第二十七条"), ("b", "第二十三条")]
    assert all(set(r) == {"id", "title", "article", "text", "score", "query_id"} for r in rows)


def test_readable_output_and_default_index_dir(tmp_path, medes_home):
    result = runner.invoke(app, ["index", "build", "--corpus", str(_pack(tmp_path)), "--embedder", "hash:64"])
    assert result.exit_code == 0, result.output
    assert (medes_home / "index" / "manifest.json").is_file()
    result = runner.invoke(app, ["search", "紧急救治"])
    assert result.exit_code == 0, result.output
    assert result.stdout.lstrip().startswith("1. 《中华人民共和国医师法》第二十七条")


def test_missing_index_is_a_clear_error(tmp_path, medes_home):
    result = runner.invoke(app, ["search", "隐私", "--index", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "no index at" in result.output and "medes index build" in result.output


def test_build_fails_only_when_nothing_is_usable(tmp_path, medes_home):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_bytes(b"\xff\xfe\x00binary")
    result = runner.invoke(
        app, ["index", "build", "--corpus", str(empty), "--out", str(tmp_path / "i"), "--embedder", "hash"]
    )
    assert result.exit_code == 1
    assert "nothing usable" in result.output
    # one bad file beside a good pack: reported, not fatal
    mixed = runner.invoke(
        app,
        [
            "index",
            "build",
            "--corpus",
            str(_pack(tmp_path)),
            "--corpus",
            str(empty),
            "--out",
            str(tmp_path / "j"),
            "--embedder",
            "hash",
        ],
    )
    assert mixed.exit_code == 0, mixed.output
    assert "notes.md" in mixed.output


def test_add_pack_to_existing_index_and_info(tmp_path, medes_home):
    out = _build(tmp_path)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "献血法.md").write_text(EXTRA, encoding="utf-8")
    result = runner.invoke(app, ["index", "build", "--corpus", str(extra), "--out", str(out), "--add"])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["index", "info", "--index", str(out)])
    manifest = json.loads(info.stdout)
    assert manifest["count"] == 3 and manifest["embedder"] == "hash:64"
    assert manifest["by_pack"] == {"test-pack": 2, "dir:extra": 1}
    hit = runner.invoke(app, ["search", "无偿献血的血液不得买卖", "--index", str(out), "-k", "1", "--json"])
    assert json.loads(hit.stdout)["id"] == "中华人民共和国献血法#第十一条"


def test_add_with_another_embedder_is_refused(tmp_path, medes_home):
    out = _build(tmp_path)
    result = runner.invoke(
        app,
        [
            "index",
            "add",
            "--corpus",
            str(_pack(tmp_path) if False else out.parent / "pack"),
            "--index",
            str(out),
            "--embedder",
            "hash:32",
        ],
    )
    assert result.exit_code == 1
    assert "built with embedder hash:64" in result.output


def test_passage_chars_and_hnsw_are_recorded_in_the_manifest(tmp_path, medes_home):
    out = _build(tmp_path, "--passage-chars", "20", "--faiss", "hnsw")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["passage_chars"] == 20 and manifest["faiss"] == "hnsw"
    bad = runner.invoke(
        app, ["index", "build", "--corpus", str(tmp_path / "pack"), "--out", str(out), "--faiss", "ivf"]
    )
    assert bad.exit_code == 1 and "flat or hnsw" in bad.output


def test_passage_chars_zero_builds_a_lexical_index_that_still_searches(tmp_path, medes_home):
    out = _build(tmp_path, "--passage-chars", "0")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["passage_chars"] == 0
    result = runner.invoke(app, ["search", "患者隐私", "--index", str(out), "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["id"] == "中华人民共和国医师法#第二十三条"
    (tmp_path / "d").mkdir()
    default = _build(tmp_path / "d")
    assert json.loads((default / "manifest.json").read_text(encoding="utf-8"))["passage_chars"] == 64
