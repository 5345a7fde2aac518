"""The built-in pack `corpora/cn-medical-ethics-core`: it loads, and every summary is faithful.

The pack restates official provisions in our own words under the official title and article
number, so that a generated scenario can cite `中华人民共和国医师法#第二十五条` without the repo
shipping official text. Two promises follow, and this module checks both against the real texts
in ../shared/corpora/laws (skipped when absent):

- grounded: each cited article exists in the official text of the same title, and the summary is
  about that article — among all articles of its law, the cited one ranks in the top 3 by a
  character-bigram score against the summary;
- our own words: no run of 20 or more identical consecutive characters (punctuation and
  whitespace ignored) is shared with the official article.

The pack-loading checks at the top need no ../shared.
"""

from __future__ import annotations

import re
from collections import defaultdict
from difflib import SequenceMatcher
from functools import cache
from pathlib import Path

import pytest
import yaml

from medes.retrieval.packs import load_corpus
from medes.retrieval.parser import INFO_END, parse_file
from tests.support.shared import REPO, shared_path

PACK_DIR = REPO / "corpora" / "cn-medical-ethics-core"
PACK_ID = "cn-medical-ethics-core"
PRINCIPLES_FILE = "医学伦理核心原则.md"
PRINCIPLES_LEVEL = "伦理原则"
"""Sources at this level are our own statements of principle: they restate no single article."""

TOP_K = 3
MAX_SHARED_RUN = 19
"""Longest run of identical characters a summary may share with the official article."""
MIN_PROVISIONS = 80
MIN_SOURCES = 15

_ARTICLE_LINE = re.compile(r"^第[零〇一二两三四五六七八九十百千]+条(?:之[一二三四五六七八九十]+)? ", re.M)
# `《医师法》第三条、第二十五条和第二十七条` → ("医师法", "第三条、第二十五条和第二十七条")
_CITATION = re.compile(r"《([^》]+)》((?:第[^《。；，]*?条(?:之[一二三四五六七八九十]+)?[、和至及]?)+)")
_LABEL = re.compile(r"第[零一二三四五六七八九十百千]+条(?:之[一二三四五六七八九十]+)?")
_NOT_TEXT = re.compile(r"[\W_]+")  # punctuation, symbols and whitespace; CJK, letters and digits stay


def _manifest() -> dict:
    return yaml.safe_load((PACK_DIR / "pack.yaml").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- loading (no ../shared)


def test_manifest_lists_every_file_with_honest_metadata():
    manifest = _manifest()
    listed = [s["file"] for s in manifest["sources"]]
    on_disk = sorted(p.name for p in PACK_DIR.glob("*.md") if p.name != "README.md")
    assert sorted(listed) == on_disk, "pack.yaml must list exactly the text files of the pack"
    assert len(set(listed)) == len(listed)
    assert manifest["id"] == PACK_ID
    assert manifest["licence"] and manifest["description"]
    for source in manifest["sources"]:
        assert source["kind"] == "summary", f"{source['file']}: the pack holds only our own summaries"
        assert source["title"] and source["level"] and source["issuer"], source["file"]
        if source["level"] != PRINCIPLES_LEVEL:
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(source["effective_date"])), source["file"]


@pytest.mark.parametrize("source", _manifest()["sources"], ids=lambda s: s["file"])
def test_each_file_parses_to_its_articles(source):
    path = PACK_DIR / source["file"]
    text = path.read_text(encoding="utf-8")
    assert not INFO_END.search(text), "pack files must not carry the ../shared header marker"
    assert text.splitlines()[0] == f"# {source['title']}", "the `# ` line must be the official title"
    result = parse_file(path)
    assert result.status == "ok", result.messages
    assert result.shape == "articles"
    labels = [p.article for p in result.provisions]
    assert labels == [m.group(0).strip() for m in _ARTICLE_LINE.finditer(text)]
    assert len(set(labels)) == len(labels), "an article appears twice in one file"
    assert all(p.text.strip() for p in result.provisions)


def test_load_corpus_reads_the_whole_pack_with_manifest_metadata():
    report = load_corpus([PACK_DIR])
    assert not report.problems(), [f.message for f in report.problems()]
    by_file: dict[str, list] = defaultdict(list)
    for provision in report.provisions:
        by_file[provision.source.file].append(provision)
    for source in _manifest()["sources"]:
        provisions = by_file[source["file"]]
        assert provisions, f"{source['file']} yielded no provisions"
        for p in provisions:
            assert p.pack == PACK_ID
            assert p.id == f"{source['title']}#{p.article}"
            assert p.source.level == source["level"] and p.source.issuer == source["issuer"]
    assert len({p.id for p in report.provisions}) == len(report.provisions)


# ---------------------------------------------------------------------------- faithfulness (../shared)


def normalize(text: str) -> str:
    return _NOT_TEXT.sub("", text)


@cache  # each official article is compared with every summary of its law
def bigrams(text: str) -> frozenset[str]:
    t = normalize(text)
    return frozenset(t[i : i + 2] for i in range(len(t) - 1))


def similarity(summary: str, article: str) -> float:
    """Mean of bigram containment (how much of the summary the article covers) and Jaccard.

    Containment alone favours long articles, which contain many bigrams by sheer length; Jaccard
    alone favours short ones. The mean ranks the article a summary restates first in practice.
    """
    s, a = bigrams(summary), bigrams(article)
    if not s or not a:
        return 0.0
    shared = len(s & a)
    return (shared / len(s) + shared / len(s | a)) / 2


def longest_shared_run(summary: str, article: str) -> str:
    a, b = normalize(summary), normalize(article)
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return a[match.a : match.a + match.size]


def _official_texts(laws_dir: Path) -> dict[str, dict[str, str]]:
    """title → article → text; versions of one title merge oldest first (newest wins), books union."""
    parsed = [parse_file(path) for path in sorted(laws_dir.glob("*.md"))]
    by_title: dict[str, dict[str, str]] = defaultdict(dict)
    for result in sorted(parsed, key=lambda r: r.source.effective_date):
        if result.shape != "articles":
            continue
        for p in result.provisions:
            by_title[result.source.title][p.article] = p.text
    return by_title


@pytest.fixture(scope="module")
def official():
    return _official_texts(shared_path("corpora", "laws"))


@pytest.fixture(scope="module")
def summaries() -> list[tuple[str, str, str]]:
    """(title, article, summary text) for every provision of the pack outside the principles."""
    rows = []
    for source in _manifest()["sources"]:
        if source["level"] == PRINCIPLES_LEVEL:
            continue
        for p in parse_file(PACK_DIR / source["file"]).provisions:
            rows.append((source["title"], p.article, p.text))
    return rows


@pytest.mark.shared
def test_every_cited_article_exists_in_the_official_text(official, summaries):
    missing = [f"{t}#{a}" for t, a, _ in summaries if a not in official.get(t, {})]
    assert not missing, f"articles not in ../shared/corpora/laws: {missing}"


@pytest.mark.shared
def test_each_summary_is_about_its_article(official, summaries):
    off_topic = []
    for title, article, text in summaries:
        articles = official.get(title, {})
        if article not in articles:
            continue  # reported by the existence test
        ranked = sorted(articles, key=lambda label: similarity(text, articles[label]), reverse=True)
        rank = ranked.index(article) + 1
        if rank > TOP_K:
            off_topic.append(f"{title}#{article}: rank {rank}, closer: {ranked[:TOP_K]}")
    assert not off_topic, "summaries that do not match their article best:\n" + "\n".join(off_topic)


@pytest.mark.shared
def test_summaries_are_in_our_own_words(official, summaries):
    copied = []
    for title, article, text in summaries:
        original = official.get(title, {}).get(article)
        if original is None:
            continue
        run = longest_shared_run(text, original)
        if len(run) > MAX_SHARED_RUN:
            copied.append(f"{title}#{article}: {len(run)} chars shared: {run}")
    assert not copied, "summaries copying the official wording:\n" + "\n".join(copied)


@pytest.mark.shared
def test_principles_cite_articles_that_exist(official):
    """`《医师法》第二十五条、第二十七条` in a principle must name real articles of a real law."""
    text = (PACK_DIR / PRINCIPLES_FILE).read_text(encoding="utf-8")
    cited = [(name, label) for name, rest in _CITATION.findall(text) for label in _LABEL.findall(rest)]
    assert len(cited) >= 50, "the principles should name the provisions they rest on"
    unresolved = []
    for name, label in cited:
        title = next((t for t in (name, f"中华人民共和国{name}") if t in official), None)
        if title is None or label not in official[title]:
            unresolved.append(f"《{name}》{label}")
    assert not unresolved, f"principles cite provisions absent from ../shared: {unresolved}"


@pytest.mark.shared
def test_pack_is_large_and_broad_enough(official, summaries):
    cited = {(t, a) for t, a, _ in summaries}
    titles = {t for t, _ in cited}
    assert len(cited) >= MIN_PROVISIONS, f"{len(cited)} provisions cited"
    assert len(titles) >= MIN_SOURCES, f"{len(titles)} sources"
    assert titles <= set(official), f"titles absent from ../shared: {titles - set(official)}"


# ---------------------------------------------------------------------------- the scorer itself


def test_similarity_ranks_the_restated_article_first():
    articles = {
        "第一条": "医师应当向患者说明病情和医疗措施，并取得其明确同意。",
        "第二条": "医疗机构应当妥善保管病历资料，患者有权复制。",
    }
    summary = "医生须把病情与治疗措施讲给患者听，经其明确同意后方可实施。"
    assert max(articles, key=lambda k: similarity(summary, articles[k])) == "第一条"


def test_longest_shared_run_ignores_punctuation_and_spaces():
    assert longest_shared_run("不得泄露，患者 隐私。", "不得泄露患者隐私") == "不得泄露患者隐私"
    assert longest_shared_run("甲乙丙", "丁戊己") == ""
