"""Corpus packs, plain directories and the ingest report (ids, duplicates, fingerprint, errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medes.retrieval import packs
from medes.retrieval.packs import (
    PackError,
    builtin_pack_dir,
    fingerprint,
    load_corpus,
    load_pack,
    read_manifest,
)

DOCTORS = (
    "# 医师法摘要\n\n## 第一章 总则\n\n第一条 医师应当坚持人民至上。\n\n第二十五条 医师应当如实告知病情。\n"
)
CONSENT = "# 知情同意摘要\n\n第一条 实施手术前应当取得书面同意。\n"

MANIFEST = """\
id: test-pack
name: 测试包
jurisdiction: CN
language: zh
description: 单元测试用
licence: CC0
sources:
  - file: 医师法.md
    title: 中华人民共和国医师法
    level: 法律
    issuer: 全国人民代表大会常务委员会
    effective_date: 2022-03-01
    kind: summary
  - file: sub/知情同意.md
    title: 医疗机构管理条例
    level: 行政法规
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def pack_dir(tmp_path):
    root = tmp_path / "test-pack"
    write(root / "pack.yaml", MANIFEST)
    write(root / "医师法.md", DOCTORS)
    write(root / "sub" / "知情同意.md", CONSENT)
    return root


def test_load_pack_applies_manifest_metadata(pack_dir):
    report = load_pack(pack_dir)
    assert report.ok
    assert [p.id for p in report.provisions] == [
        "中华人民共和国医师法#第一条",
        "中华人民共和国医师法#第二十五条",
        "医疗机构管理条例#第一条",
    ]
    first = report.provisions[0]
    assert first.pack == "test-pack"
    assert first.path == ["第一章 总则"]
    assert first.source.level == "法律"
    assert first.source.issuer == "全国人民代表大会常务委员会"
    assert first.source.effective_date == "2022-03-01"  # YAML date → ISO string
    assert first.source.file == "医师法.md"
    (manifest,) = report.packs
    assert manifest.id == "test-pack"
    assert manifest.sources[0].kind == "summary"
    assert manifest.sources[1].kind == "official"
    assert [f.status for f in report.files] == ["ok", "ok"]
    assert [f.n_provisions for f in report.files] == [2, 1]


def test_summary_provisions_cite_the_official_articles_they_restate(tmp_path):
    root = tmp_path / "p"
    write(
        root / "pack.yaml",
        """\
id: p
sources:
  - file: 原则.md
    title: 核心原则
    level: 伦理原则
    kind: summary
  - file: 医师法.md
    title: 中华人民共和国医师法
    kind: summary
  - file: 官方.md
    title: 某官方文本
""",
    )
    write(
        root / "原则.md",
        "# 核心原则\n\n第一条 知情同意。依据：《医师法》第二十五条、《某条例》第三条至第四条。\n",
    )
    write(root / "医师法.md", "# 医师法\n\n第二十五条 医师应当如实告知病情。\n")
    write(root / "官方.md", "# 某官方文本\n\n第一条 原文。\n")
    report = load_pack(root)
    cites = {p.id: p.cites for p in report.provisions}
    assert cites == {
        "核心原则#第一条": ["中华人民共和国医师法#第二十五条", "某条例#第三条", "某条例#第四条"],
        "中华人民共和国医师法#第二十五条": ["中华人民共和国医师法#第二十五条"],
        "某官方文本#第一条": [],
    }
    assert "某条例" in report.files[0].message  # a cited title the pack does not hold is reported


def test_missing_listed_file_is_reported_and_the_rest_ingested(pack_dir):
    (pack_dir / "sub" / "知情同意.md").unlink()
    report = load_pack(pack_dir)
    assert len(report.provisions) == 2
    missing = [f for f in report.files if f.status == "skipped"]
    assert len(missing) == 1
    assert missing[0].file.endswith("知情同意.md")
    assert "listed in" in missing[0].message and "missing" in missing[0].message


def test_unlisted_text_file_in_a_pack_is_reported(pack_dir):
    write(pack_dir / "多余.md", CONSENT)
    write(pack_dir / "README.md", "# 说明\n")
    report = load_pack(pack_dir)
    unlisted = [f for f in report.files if "not listed" in f.message]
    assert [Path(f.file).name for f in unlisted] == ["多余.md"]
    assert len(report.provisions) == 3


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("id: x\nsources: [\n", "invalid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: no id\nsources:\n  - file: a.md\n    title: A\n", "id: Field required"),
        ("id: x\nsources: []\n", "sources"),
        ("id: x\nsources:\n  - file: a.md\n", "sources.0.title: Field required"),
        ("id: x\nsoruces:\n  - file: a.md\n    title: A\n", "soruces"),
        ("id: x\nsources:\n  - file: a.md\n    title: A\n    kind: paraphrase\n", "sources.0.kind"),
    ],
)
def test_bad_manifest_gives_a_clear_message(tmp_path, manifest, expected):
    write(tmp_path / "pack.yaml", manifest)
    with pytest.raises(PackError) as info:
        read_manifest(tmp_path)
    assert expected in str(info.value)
    assert str(tmp_path / "pack.yaml") in str(info.value)


def test_bad_manifest_does_not_stop_a_corpus_ingest(tmp_path, pack_dir):
    broken = tmp_path / "broken"
    write(broken / "pack.yaml", "id: [unclosed\n")
    write(broken / "a.md", CONSENT)
    report = load_corpus([broken, pack_dir])
    assert len(report.provisions) == 3
    skipped = [f for f in report.files if f.status == "skipped"]
    assert len(skipped) == 1 and "invalid YAML" in skipped[0].message


def test_plain_directory_recursive_sorted_with_docs_skipped(tmp_path, pack_dir):
    root = tmp_path / "laws"
    write(root / "b.md", "# 乙法\n\n第一条 乙。\n")
    write(root / "a" / "c.txt", "丙条例\n\n第一条 丙。\n")
    write(root / "SOURCES.md", "# Sources\n\n| a | b |\n")
    write(root / "notes.yaml", "x: 1\n")
    write(root / ".hidden.md", "# 隐藏\n\n第一条 隐。\n")
    report = load_corpus([root])
    assert [p.id for p in report.provisions] == ["丙条例#第一条", "乙法#第一条"]
    assert {p.pack for p in report.provisions} == {"dir:a", "dir:laws"}
    docs = [f for f in report.files if f.status == "skipped"]
    assert [Path(f.file).name for f in docs] == ["SOURCES.md"]
    assert "documentation" in docs[0].message


def test_pack_nested_in_a_plain_directory_is_loaded_as_a_pack(tmp_path, pack_dir):
    report = load_corpus([tmp_path])
    assert {p.pack for p in report.provisions} == {"test-pack"}
    assert len(report.provisions) == 3


def test_single_files_and_missing_paths(tmp_path):
    one = write(tmp_path / "x" / "甲法.md", "# 甲法\n\n第一条 甲。\n")
    report = load_corpus([one, tmp_path / "nope"])
    assert [p.id for p in report.provisions] == ["甲法#第一条"]
    assert report.provisions[0].pack == "dir:x"
    assert report.files[1].status == "skipped"
    assert "does not exist" in report.files[1].message


def test_bad_files_are_reported_and_everything_else_ingested(tmp_path):
    root = tmp_path / "mixed"
    write(root / "good.md", "# 好法\n\n第一条 好。\n")
    (root / "binary.md").write_bytes(b"\x00\x01\x02")
    (root / "latin.md").write_bytes(b"\xff\xfe\xfd caf\xe9")
    (root / "empty.txt").write_bytes(b"")
    (root / "big.md").write_text("# 大\n\n第一条 " + "字" * 400 + "\n", encoding="utf-8")
    write(root / "case.md", "# 某案例\n\n## 基本案情\n\n某医院未履行告知义务。\n")
    report = load_corpus([root], max_bytes=1000)
    status = {Path(f.file).name: (f.status, f.n_provisions) for f in report.files}
    assert status == {
        "big.md": ("skipped", 0),
        "binary.md": ("skipped", 0),
        "case.md": ("warning", 1),
        "empty.txt": ("skipped", 0),
        "good.md": ("ok", 1),
        "latin.md": ("skipped", 0),
    }
    assert all(f.message for f in report.files if f.status != "ok")
    assert report.ok
    assert sorted(p.id for p in report.provisions) == ["好法#第一条", "某案例#全文"]


def test_nothing_ingested_is_not_ok(tmp_path):
    (tmp_path / "empty.md").write_bytes(b"")
    report = load_corpus([tmp_path])
    assert not report.ok
    assert report.files[0].status == "skipped"


def test_duplicate_ids_across_files_keep_the_first_and_report_the_rest(tmp_path):
    write(tmp_path / "one" / "a.md", "# 甲法\n\n第一条 一。\n\n第二条 二。\n")
    write(tmp_path / "two" / "a.md", "# 甲法\n\n第一条 另一。\n")
    report = load_corpus([tmp_path / "one", tmp_path / "two"])
    assert [(p.id, p.text) for p in report.provisions] == [("甲法#第一条", "一。"), ("甲法#第二条", "二。")]
    second = report.files[1]
    assert second.status == "skipped" and second.n_provisions == 0
    assert "1 duplicate ids already provided by" in second.message
    assert str(tmp_path / "one" / "a.md") in second.message


def test_older_version_of_the_same_title_gets_qualified_ids(tmp_path):
    root = tmp_path / "laws"
    write(root / "生物安全法(2020-10-17).md", "# 生物安全法\n\n第一条 旧。\n\n第九十一条 旧增。\n")
    write(root / "生物安全法(2024-04-26).md", "# 生物安全法\n\n第一条 新。\n")
    report = load_corpus([root])
    ids = {p.id: p.text for p in report.provisions}
    assert ids == {
        "生物安全法#第一条": "新。",
        "生物安全法@2020-10-17#第一条": "旧。",
        "生物安全法#第九十一条": "旧增。",  # no newer article of that label: keeps its plain id
    }
    older = report.files[0]
    assert older.status == "warning" and older.n_provisions == 2
    assert "1 ids shared with the newer version" in older.message
    assert report.files[1].status == "ok"


def test_official_text_supersedes_a_summary_of_the_same_article(tmp_path, pack_dir):
    laws = tmp_path / "laws"
    write(laws / "医师法(2021-08-20).md", "# 中华人民共和国医师法\n\n第一条 官方原文。\n")
    report = load_corpus([pack_dir, laws])
    texts = {p.id: p.text for p in report.provisions}
    assert texts["中华人民共和国医师法#第一条"] == "官方原文。"  # despite the summary's later date
    assert "中华人民共和国医师法#第二十五条" in texts  # no official text for it: the summary stays
    assert not any("@" in pid for pid in texts)
    summary_file = next(f for f in report.files if f.file.endswith("test-pack/医师法.md"))
    assert summary_file.kind == "summary" and summary_file.n_provisions == 1
    assert "1 summaries superseded by the official text" in summary_file.message


def test_fingerprint_tracks_content_not_order(tmp_path):
    write(tmp_path / "a.md", "# 甲法\n\n第一条 一。\n")
    write(tmp_path / "b.md", "# 乙法\n\n第一条 二。\n")
    report = load_corpus([tmp_path])
    assert report.fingerprint == fingerprint(reversed(report.provisions))
    assert report.fingerprint == load_corpus([tmp_path]).fingerprint
    write(tmp_path / "b.md", "# 乙法\n\n第一条 改。\n")
    assert load_corpus([tmp_path]).fingerprint != report.fingerprint


def test_builtin_pack_dir_prefers_the_packaged_copy(tmp_path, monkeypatch):
    packaged, checkout = tmp_path / "pkg" / "core", tmp_path / "repo" / "core"
    write(checkout / "pack.yaml", MANIFEST)
    monkeypatch.setattr(packs, "_builtin_candidates", lambda: (packaged, checkout))
    assert builtin_pack_dir() == checkout
    write(packaged / "pack.yaml", MANIFEST)
    assert builtin_pack_dir() == packaged
    monkeypatch.setattr(packs, "_builtin_candidates", lambda: (tmp_path / "none",))
    with pytest.raises(FileNotFoundError, match="none"):
        builtin_pack_dir()


def test_builtin_pack_loads_cleanly():
    try:
        pack = builtin_pack_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"built-in pack not present in this checkout: {exc}")
    report = load_pack(pack)
    assert report.ok
    assert [f for f in report.files if f.status == "skipped"] == []
    assert {p.pack for p in report.provisions} == {packs.BUILTIN_PACK}
    assert len({p.id for p in report.provisions}) == len(report.provisions)
