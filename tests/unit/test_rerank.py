"""The bridge: query similarity to citing provisions (a pack's principles) flows to what they cite."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medes.records import Provision, Source
from medes.retrieval.embedders import HashingEmbedder
from medes.retrieval.index import CITING_PASSAGE_CHARS, MANIFEST, HybridIndex
from medes.retrieval.rerank import RankConfig, bridge_scores, cite_links


def provision(pid: str, text: str, cites: tuple[str, ...] = ()) -> Provision:
    title, _, article = pid.partition("#")
    return Provision(id=pid, source=Source(title=title), article=article, text=text, cites=list(cites))


SAME = "医疗机构应当建立健全内部管理制度。"
ARTICLES = [
    provision("中华人民共和国甲法#第一条", SAME),
    provision("中华人民共和国乙法#第一条", SAME),
]
PRINCIPLES = [
    # texts long enough that only the whole statement (not a 64-character cut) names the topic
    provision(
        "原则#第一条", "紧急救治。" + "对急危重症患者必须立即救治，不得拒绝或者拖延。" * 4, ("甲法#第一条",)
    ),
    provision(
        "原则#第二条",
        "保密与隐私。" + "患者的病情和隐私属于个人信息，未经同意不得泄露。" * 4,
        ("乙法#第一条",),
    ),
]


class RecordingEmbedder(HashingEmbedder):
    """Remembers the passages it embedded, to check what the index embeds for each provision."""

    def __init__(self) -> None:
        super().__init__(128)
        self.seen: list[str] = []

    def embed_passages(self, texts):
        self.seen.extend(texts)
        return super().embed_passages(texts)


def test_cite_links_resolve_citations_and_skip_self_citations():
    summary = provision("中华人民共和国丙法#第一条", "摘要", ("中华人民共和国丙法#第一条", "甲法#第一条"))
    provisions = [*ARTICLES, *PRINCIPLES, summary]
    sources, links = cite_links(provisions)
    assert sources.tolist() == [2, 3, 4]
    assert links.shape == (3, 5)
    assert links.toarray().tolist() == [
        [1, 0, 0, 0, 0],  # 原则一 → 甲法 (cited without the 中华人民共和国 prefix)
        [0, 1, 0, 0, 0],  # 原则二 → 乙法
        [1, 0, 0, 0, 0],  # the summary → 甲法; its own article (the same id) is no link
    ]


def test_cite_links_without_citing_provisions():
    sources, links = cite_links(ARTICLES)
    assert sources.size == 0 and links.shape == (0, 2)
    assert bridge_scores(np.zeros(0), links).tolist() == [0.0, 0.0]


def test_bridge_scores_rescale_over_sources_and_take_the_max_per_target():
    # sources 0..2 cite targets: 0 → {0}, 1 → {0, 1}, 2 → {2}
    _, links = cite_links(
        [
            provision("法#第一条", "a"),
            provision("法#第二条", "b"),
            provision("法#第三条", "c"),
            provision("原则#一", "x", ("法#第一条",)),
            provision("原则#二", "y", ("法#第一条", "法#第二条")),
            provision("原则#三", "z", ("法#第三条",)),
        ]
    )
    scores = bridge_scores(np.array([0.9, 0.5, 0.7]), links)
    # median 0.7 ↦ 0, best 0.9 ↦ 1: source 0 passes 1.0, sources 1 and 2 nothing
    assert scores[:3].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert scores[3:].tolist() == [0.0, 0.0, 0.0]  # nobody cites the principles
    # the same cosines shifted by a constant give the same scores (model-independent scale)
    assert bridge_scores(np.array([0.4, 0.0, 0.2]), links).tolist() == pytest.approx(scores.tolist())


def test_bridge_lifts_the_article_cited_by_the_principle_the_query_resembles():
    provisions = [*ARTICLES, *PRINCIPLES]
    query = "患者的隐私被泄露了，医疗机构的管理制度"
    off = HybridIndex.build(provisions, HashingEmbedder(128), config=RankConfig(bridge_weight=0.0))
    on = HybridIndex.build(provisions, HashingEmbedder(128), config=RankConfig(bridge_weight=0.5))
    # both articles are cited (same prior) and lexically identical: without the bridge the first
    # added wins; with it, the article that the privacy principle cites
    assert off.search(query, 1)[0].provision.id == "中华人民共和国甲法#第一条"
    assert on.search(query, 1)[0].provision.id == "中华人民共和国乙法#第一条"
    on.config = RankConfig(fusion="rrf", bridge_weight=0.5)
    assert on.search(query, 1)[0].provision.id == "中华人民共和国乙法#第一条"


def test_bridge_survives_save_and_open(tmp_path):
    index = HybridIndex.build([*ARTICLES, *PRINCIPLES], HashingEmbedder(128))
    index.save(tmp_path / "ix")
    reopened = HybridIndex.open(tmp_path / "ix", HashingEmbedder(128))
    query = "患者的隐私被泄露了，医疗机构的管理制度"
    assert [h.provision.id for h in reopened.search(query, 3)] == [
        h.provision.id for h in index.search(query, 3)
    ]
    assert reopened.bridge[0].tolist() == [2, 3]


def test_citing_provisions_are_embedded_whole_and_old_indexes_keep_their_recipe(tmp_path):
    emb = RecordingEmbedder()
    index = HybridIndex.build([*ARTICLES, PRINCIPLES[0]], emb, passage_chars=16)
    assert index.manifest["citing_passage_chars"] == CITING_PASSAGE_CHARS
    assert [len(t) for t in emb.seen] == [16, 16, len("原则：" + PRINCIPLES[0].text)]

    # an index saved before the bridge existed has no citing_passage_chars: adding to it embeds
    # citing provisions with its passage_chars, as it was built, and the manifest stays as it was
    index.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / MANIFEST).read_text(encoding="utf-8"))
    del manifest["citing_passage_chars"]
    (tmp_path / "old" / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    emb.seen.clear()
    old = HybridIndex.open(tmp_path / "old", emb)
    old.add([PRINCIPLES[1]])
    assert [len(t) for t in emb.seen] == [16]
    assert "citing_passage_chars" not in old.manifest


class QueryCountingEmbedder(RecordingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def embed_queries(self, texts):
        self.queries += len(texts)
        return super().embed_queries(texts)


def test_passage_chars_zero_embeds_only_the_citing_provisions():
    emb = QueryCountingEmbedder()
    provisions = [*ARTICLES, *PRINCIPLES]
    index = HybridIndex.build(provisions, emb, passage_chars=0)
    assert emb.seen == [f"原则：{p.text}" for p in PRINCIPLES]  # articles are not embedded
    assert not index.vectors.reconstruct(0).any()
    query = "患者的隐私被泄露了，医疗机构的管理制度"
    hits = index.search(query, 2)
    assert hits[0].provision.id == "中华人民共和国乙法#第一条"  # the bridge still works
    assert hits[0].dense_score == 0.0 and emb.queries == 1

    # without bridge sources such an index is purely lexical: no query is embedded
    lexical = HybridIndex.build(ARTICLES, emb, passage_chars=0)
    emb.queries = 0
    assert lexical.search("管理制度", 1)[0].bm25_score > 0 and emb.queries == 0
