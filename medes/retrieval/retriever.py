"""LangChain retriever over a `HybridIndex`, so the index plugs into any LangChain/LangGraph chain."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from medes.retrieval.index import Hit, HybridIndex


def hit_to_document(hit: Hit) -> Document:
    p = hit.provision
    return Document(
        page_content=p.text,
        id=p.id,
        metadata={
            "id": p.id,
            "title": p.source.title,
            "article": p.article,
            "citation": p.citation(),
            "path": list(p.path),
            "pack": p.pack,
            "level": p.source.level,
            "score": hit.score,
            "rank": hit.rank,
            "dense_score": hit.dense_score,
            "bm25_score": hit.bm25_score,
        },
    )


class MedesRetriever(BaseRetriever):
    """Top-k provisions for a query as `Document`s (text as content; id/title/article/score as metadata)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    """A `HybridIndex` (typed loosely so pydantic does not try to validate it)."""
    k: int = 5

    @classmethod
    def from_dir(cls, directory, k: int = 5, **kwargs: Any) -> MedesRetriever:
        return cls(index=HybridIndex.open(directory), k=k, **kwargs)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [hit_to_document(h) for h in self.index.search(query, self.k)]
