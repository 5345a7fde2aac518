"""Quality gates for generated scenarios: pure checks, one reason code per failure.

A scenario must be well-formed (schema), cite only provisions that resolve and were retrieved for it
(grounding), describe conduct without restating the norm or its own reference (no_leak), be Chinese, stay within length
bounds, read as a situation rather than a loop of one sentence (repetition), state its norm in words
(reference), and, for objective items, have options A–E and a valid key. Every failing check yields one
`GateFailure`; the graph records each as a gate event so the rejection profile is measurable.

Leak thresholds come from the MedES authors' public sample (see docs/benchmarks.md, "Generation"):
real MedES queries share at most 8 consecutive characters with their own reference norm and contain
at most 27% of its character bigrams; a small model that pastes the provision lands far above both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from medes.records import Provision, Scenario

OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D", "E")


@dataclass(frozen=True)
class GateConfig:
    min_query_chars: int = 40
    max_query_chars: int = 400
    min_stem_chars: int = 8
    max_stem_chars: int = 300
    max_option_chars: int = 80
    min_cjk_share: float = 0.7
    leak_lcs_chars: int = 12
    """A common substring this long with a cited provision is a pasted norm (MedES max: 8)."""
    leak_containment: float = 0.45
    """Share of a provision's character bigrams found in the query (MedES max: 0.27)."""
    min_repeat_chars: int = 6
    """A sentence this long that occurs twice is a degenerate loop, not a scenario (MedES: none)."""
    min_reference_chars: int = 8
    """The norm in words; a bare label like `第七十条` or an id says nothing (MedES min: 12)."""
    echo_chars: int = 12
    """A run this long shared with the drafting instructions is the prompt copied back, not a
    situation (a small model writes `打算做或正在面对一件与所选规范相冲突的事` into its scenario)."""


@dataclass(frozen=True)
class GateFailure:
    reason: str
    """Stable code: schema, grounding, no_leak, echo, chinese, length, options, key, unchanged,
    repetition, reference."""
    detail: str


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def cjk_share(text: str) -> float:
    """CJK characters among letters and digits (punctuation and spaces do not count)."""
    counted = alnum(text)
    if not counted:
        return 0.0
    return sum(map(is_cjk, counted)) / len(counted)


def longest_common_substring(a: str, b: str) -> int:
    """Length of the longest common substring (O(len(a)·len(b)), ~5 ms on a few hundred chars).

    Kept for analysis (bench/generate.py reports LCS distributions); the gate uses the cheaper
    `shares_substring`, which answers the only question it asks: is the LCS ≥ the threshold?
    """
    if not a or not b:
        return 0
    best = 0
    prev = [0] * (len(b) + 1)
    for ch in a:
        cur = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            if ch == other:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
        prev = cur
    return best


def shares_substring(a: str, b: str, length: int) -> str | None:
    """A substring of `length` characters common to `a` and `b`, or None.

    Same verdict as `longest_common_substring(a, b) >= length` (a common run of ≥ length characters
    exists iff their length-grams intersect), but a set intersection: ~100× cheaper than the
    quadratic DP, which cost ~5 ms per check in pure Python.
    """
    if length <= 0:
        return ""
    if len(a) < length or len(b) < length:
        return None
    if len(a) > len(b):
        a, b = b, a
    grams = {a[i : i + length] for i in range(len(a) - length + 1)}
    for i in range(len(b) - length + 1):
        if (gram := b[i : i + length]) in grams:
            return gram
    return None


@lru_cache(maxsize=4096)
def _bigrams(text: str) -> frozenset[str]:
    """Cached: one check compares the query with every cited provision and the reference, and the
    same provisions come back across items (seed norms) and gates (draft, then each mutant)."""
    chars = alnum(text)
    return frozenset(map(str.__add__, chars, chars[1:]))


def bigram_containment(norm: str, text: str) -> float:
    """Share of `norm`'s character bigrams that also occur in `text`."""
    grams = _bigrams(norm)
    if not grams:
        return 0.0
    return len(grams & _bigrams(text)) / len(grams)


def leak(text: str, provision: Provision, config: GateConfig) -> str | None:
    """Why `text` restates `provision`, or None when it does not."""
    return _restates(text, provision.text, provision.id, config)


def _restates(text: str, norm: str, label: str, config: GateConfig) -> str | None:
    """Why `text` restates `norm` (a provision, or the scenario's own 考点), or None."""
    if (run := shares_substring(text, norm, config.leak_lcs_chars)) is not None:
        return f"{label}: ≥{config.leak_lcs_chars} consecutive characters copied ({run!r})"
    share = bigram_containment(norm, text)
    if share >= config.leak_containment:
        return f"{label}: {share:.0%} of its bigrams restated"
    return None


def check(
    scenario: Scenario,
    *,
    retrieved_ids: Iterable[str],
    resolve: dict[str, Provision | None],
    config: GateConfig = GateConfig(),
    parent: Scenario | None = None,
    instructions: str = "",
) -> list[GateFailure]:
    """All failures of one scenario; empty means it passes.

    `resolve` maps each cited id to its provision in the index (None when it does not resolve).
    `instructions`: what the model that wrote it was told (its prompt without the material: the
    provisions, the parent scenario); a scenario that repeats it is rejected as `echo`.
    """
    failures: list[GateFailure] = []
    retrieved = set(retrieved_ids)
    text = scenario.query
    if scenario.kind == "objective":
        text = scenario.query + "".join(scenario.options.values())

    if not scenario.query.strip() or not scenario.reference.strip() or not scenario.norm_ids:
        failures.append(GateFailure("schema", "empty query, reference or norm_ids"))

    unresolved = [n for n in scenario.norm_ids if resolve.get(n) is None]
    unretrieved = [n for n in scenario.norm_ids if n not in retrieved]
    if unresolved or unretrieved:
        failures.append(
            GateFailure("grounding", f"unresolved: {unresolved}; not among retrieved: {unretrieved}")
        )

    leaks = [
        why for n in scenario.norm_ids if (p := resolve.get(n)) is not None if (why := leak(text, p, config))
    ]
    if scenario.reference.strip() and (why := _restates(text, scenario.reference, "reference", config)):
        leaks.append(why)
    if leaks:
        failures.append(GateFailure("no_leak", "; ".join(leaks)))
    if instructions and (run := shares_substring(text, instructions, config.echo_chars)) is not None:
        failures.append(GateFailure("echo", f"≥{config.echo_chars} characters of the instructions ({run!r})"))

    share = cjk_share(text)
    if share < config.min_cjk_share:
        failures.append(GateFailure("chinese", f"CJK share {share:.2f} < {config.min_cjk_share}"))

    n = len(scenario.query)
    lo, hi = (
        (config.min_stem_chars, config.max_stem_chars)
        if scenario.kind == "objective"
        else (config.min_query_chars, config.max_query_chars)
    )
    if not lo <= n <= hi:
        failures.append(GateFailure("length", f"{n} chars, bounds [{lo}, {hi}]"))

    if scenario.kind == "objective":
        failures.extend(_objective(scenario, config))
    failures.extend(_coherence(scenario, config))

    if parent is not None and alnum(parent.query) == alnum(scenario.query):
        failures.append(GateFailure("unchanged", "mutation returned the parent's text"))
    return failures


def _objective(scenario: Scenario, config: GateConfig) -> list[GateFailure]:
    out: list[GateFailure] = []
    texts = [scenario.options.get(letter, "").strip() for letter in OPTION_LETTERS]
    if sorted(scenario.options) != list(OPTION_LETTERS) or not all(texts):
        out.append(GateFailure("options", f"need non-empty options A–E, got {sorted(scenario.options)}"))
    elif len(set(texts)) < len(texts):
        out.append(GateFailure("options", "two options have the same text"))
    elif any(len(t) > config.max_option_chars for t in texts):
        out.append(GateFailure("length", f"an option exceeds {config.max_option_chars} chars"))
    key = scenario.answer
    if not key or any(c not in OPTION_LETTERS for c in key) or key != "".join(sorted(set(key))):
        out.append(GateFailure("key", f"answer {key!r} is not a sorted non-empty subset of A–E"))
    return out


def alnum(text: str) -> str:
    """Letters and digits only: what the text-overlap checks compare (punctuation and spaces drop)."""
    return "".join(filter(str.isalnum, text))


_SENTENCE_END = re.compile(r"[。！？!?；;]")
_BARE_LABEL = re.compile(r"^(第[一二三四五六七八九十百千零〇\d]+条(之[一二三四五六七八九十]+)?|[\d.]+)$")


def repeated_sentence(text: str, min_chars: int) -> str | None:
    """A sentence (≥ min_chars alphanumerics) that occurs twice: small models loop like this."""
    seen: set[str] = set()
    for sentence in _SENTENCE_END.split(text):
        key = alnum(sentence)
        if len(key) < min_chars:
            continue
        if key in seen:
            return sentence.strip()
        seen.add(key)
    return None


def _coherence(scenario: Scenario, config: GateConfig) -> list[GateFailure]:
    out: list[GateFailure] = []
    if (again := repeated_sentence(scenario.query, config.min_repeat_chars)) is not None:
        out.append(GateFailure("repetition", f"sentence repeated: {again[:60]!r}"))
    if re.match(r"^\s*我是我", scenario.query):
        out.append(GateFailure("repetition", "speaker is 我是我: no role stated"))
    ref = scenario.reference.strip()
    if ref and not states_norm(ref, config):
        out.append(GateFailure("reference", f"reference {ref[:40]!r} does not state the norm in words"))
    return out


def states_norm(reference: str, config: GateConfig = GateConfig()) -> bool:
    """False for a bare article label (`第七十条`), a provision id or a fragment too short to be a rule."""
    ref = reference.strip()
    return len(alnum(ref)) >= config.min_reference_chars and "#" not in ref and not _BARE_LABEL.match(ref)
