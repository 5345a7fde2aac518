"""In-memory stand-ins shared by the unit tests."""

from __future__ import annotations

from dataclasses import dataclass

from medes.records import Provision, Source


def provision(title: str, article: str, text: str, *, pack: str = "") -> Provision:
    """A test provision with the id the parser would give it (`<title>#<article>`)."""
    return Provision(
        id=f"{title}#{article}", source=Source(title=title), article=article, text=text, pack=pack
    )


@dataclass
class FakeHit:
    provision: Provision
    score: float
    rank: int


class FakeIndex:
    """`HybridIndex` stand-in: provisions come back in the given order, rank 1.., score 1/rank; queries are recorded."""

    def __init__(self, provisions: list[Provision]):
        self.provisions = list(provisions)
        self.by_id = {p.id: p for p in self.provisions}
        self.queries: list[tuple[str, int]] = []

    def search(self, query: str, k: int) -> list[FakeHit]:
        self.queries.append((query, k))
        return [FakeHit(p, 1.0 / (i + 1), i + 1) for i, p in enumerate(self.provisions[:k])]

    def get(self, provision_id: str) -> Provision | None:
        return self.by_id.get(provision_id)
