"""MedesRetriever: a LangChain BaseRetriever over HybridIndex."""

from __future__ import annotations

from langchain_core.documents import Document

from medes.records import Provision, Source
from medes.retrieval.embedders import HashingEmbedder
from medes.retrieval.index import HybridIndex
from medes.retrieval.retriever import MedesRetriever


def _index() -> HybridIndex:
    items = {
        ("中华人民共和国民法典", "第一千零七条"): "禁止以任何形式买卖人体细胞、人体组织、人体器官、遗体。",
        (
            "中华人民共和国医师法",
            "第二十七条",
        ): "对需要紧急救治的患者，医师应当采取紧急措施进行诊治，不得拒绝急救处置。",
        ("中华人民共和国精神卫生法", "第三十条"): "精神障碍的住院治疗实行自愿原则。",
    }
    provisions = [
        Provision(id=f"{t}#{a}", source=Source(title=t, level="法律"), article=a, text=x, pack="p")
        for (t, a), x in items.items()
    ]
    return HybridIndex.build(provisions, HashingEmbedder(64))


def test_invoke_returns_documents_with_provision_metadata():
    retriever = MedesRetriever(index=_index(), k=2)
    docs = retriever.invoke("医生拒绝对紧急救治的患者进行急救")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.page_content.startswith("对需要紧急救治的患者")
    assert top.metadata["id"] == "中华人民共和国医师法#第二十七条"
    assert top.metadata["title"] == "中华人民共和国医师法"
    assert top.metadata["article"] == "第二十七条"
    assert top.metadata["citation"] == "《中华人民共和国医师法》第二十七条"
    assert top.metadata["rank"] == 1
    assert top.metadata["score"] >= docs[1].metadata["score"]


def test_k_is_respected_and_batch_works():
    retriever = MedesRetriever(index=_index(), k=1)
    batches = retriever.batch(["买卖人体器官", "精神障碍住院"])
    assert [[d.metadata["article"] for d in docs] for docs in batches] == [["第一千零七条"], ["第三十条"]]


def test_from_dir(tmp_path):
    _index().save(tmp_path / "idx")
    retriever = MedesRetriever.from_dir(tmp_path / "idx", k=3)
    assert len(retriever.invoke("遗体")) >= 1
