"""The real 142-file law corpus in ../shared/corpora/laws ingests completely (about 2 s)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medes.retrieval.packs import IngestReport, load_corpus
from tests.support.shared import shared_path

# The SOURCES.md rule for an article header line.
HEADER = re.compile(r"^第[一二三四五六七八九十百千零〇]+条(之[一二三四五六七八九十]+)? ", re.M)
ARTICLE = re.compile(r"^第[一二三四五六七八九十百千零〇]+条(之[一二三四五六七八九十]+)?$")
CIVIL_CODE_BOOKS = {
    "总则.md": "总则",
    "人格权编.md": "人格权编",
    "婚姻家庭编.md": "婚姻家庭编",
    "侵权责任编.md": "侵权责任编",
}

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def laws() -> Path:
    return shared_path("corpora", "laws")


@pytest.fixture(scope="module")
def report(laws) -> IngestReport:
    return load_corpus([laws])


def law_files(laws: Path) -> list[Path]:
    return sorted(p for p in laws.glob("*.md") if p.name != "SOURCES.md")


def test_every_file_ingested_or_explained(laws, report):
    files = law_files(laws)
    assert len(files) == 142
    by_name = {Path(f.file).name: f for f in report.files}
    assert by_name["SOURCES.md"].status == "skipped"
    for path in files:
        entry = by_name[path.name]
        assert entry.n_provisions >= 1, (path.name, entry.message)
        assert entry.status in ("ok", "warning")
        if entry.status == "warning":
            assert entry.message, path.name
    assert report.ok


def test_article_headers_all_become_provisions(laws, report):
    expected = sum(len(HEADER.findall(p.read_text(encoding="utf-8"))) for p in law_files(laws))
    assert expected == 7874  # the total SOURCES.md states
    assert sum(1 for p in report.provisions if ARTICLE.match(p.article)) == expected


def test_known_upstream_defects_are_reported(report):
    messages = {Path(f.file).name: f.message for f in report.files}
    assert "第十二条 to 第十四条" in messages["山东省中医药条例(2020-11-27).md"]
    assert "glued" in messages["郑州市社会急救医疗条例(2019-01-22).md"]
    assert "article-less" in messages["刑法修正案（十一）.md"]


def test_ids_unique_and_fingerprint_set(report):
    ids = [p.id for p in report.provisions]
    assert len(ids) == len(set(ids))
    assert re.fullmatch(r"[0-9a-f]{64}", report.fingerprint)


def test_spot_checks(report):
    by_id = {p.id: p for p in report.provisions}
    organ = by_id["中华人民共和国刑法#第二百三十四条之一"]
    assert "器官" in organ.text
    assert organ.path == ["第二编 分则", "第四章 侵犯公民人身权利、民主权利罪"]
    doctors = [p for p in report.provisions if p.source.title == "中华人民共和国医师法"]
    assert len(doctors) == 67
    assert doctors[0].source.effective_date == "2021-08-20"
    assert by_id["中华人民共和国医师法#第一条"].path[0] == "第一章 总则"
    amendment = [p for p in report.provisions if p.source.title == "中华人民共和国刑法修正案（十一）"]
    assert [p.article for p in amendment][:3] == ["一", "二", "三"] and len(amendment) == 48
    assert by_id["人体损伤程度鉴定标准#5.1.1"].text.startswith("重伤一级")
    for title in ("婚前隐瞒重大疾病 配偶可申请撤销婚姻", "涉人类辅助生殖技术医疗服务合同纠纷案件的裁判规则"):
        assert by_id[f"{title}#全文"].text
    # superseded versions stay citable under a qualified id; the newer text owns the plain id
    assert "中华人民共和国生物安全法@2020-10-17#第一条" in by_id
    assert by_id["中华人民共和国生物安全法#第一条"].source.effective_date == "2024-04-26"


def test_civil_code_books_share_the_code_title_with_the_book_in_the_path(report):
    for file, book in CIVIL_CODE_BOOKS.items():
        provisions = [p for p in report.provisions if p.source.file == file]
        assert provisions, file
        assert {p.source.title for p in provisions} == {"中华人民共和国民法典"}
        assert all(p.path[0] == book for p in provisions)
    by_id = {p.id: p for p in report.provisions}
    assert "重大疾病" in by_id["中华人民共和国民法典#第一千零五十三条"].text
    assert by_id["中华人民共和国民法典#第一千二百一十八条"].path == ["侵权责任编", "第六章 医疗损害责任"]
