"""Generate values that satisfy a JSON schema, with Chinese text for strings.

The simulated endpoint (simserver.py) must answer any structured-output request with content that
validates against the schema the client sent, without knowing the client's pydantic models. This
module is that generator: generic over the JSON-schema keywords pydantic, langchain and the OpenAI
SDK emit, deterministic for a given `random.Random`, and independent of any HTTP concern so it can
be tested directly. It also holds the deliberate corruptions (wrong types) used for fault injection.
Plain string properties whose names `scenario_text.FIELDS` knows get its composed clinical text.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from tests.support import scenario_text

# Fragments in the register of the benchmark (medical ethics, first-person clinical situations).
_ZH_FRAGMENTS = (
    "患者的知情同意是诊疗活动的前提",
    "医务人员应当尊重患者的隐私",
    "在紧急情况下应优先保障生命安全",
    "医生不得泄露患者的病历信息",
    "研究者需要获得伦理委员会的批准",
    "家属的意见不能替代有行为能力患者的决定",
    "应当如实告知病情并注意沟通方式",
    "临床试验中受试者有权随时退出",
    "处方应当符合诊疗规范",
    "不得因经济利益开具不必要的检查",
    "对未成年人应征得其监护人同意",
    "遇到利益冲突时应主动回避",
    "病历资料应当及时完整地记录",
    "在资源有限时需要公平分配",
    "应当尊重患者的宗教信仰和文化习俗",
    "必要时可以请求上级医师会诊",
    "医疗机构应建立不良事件报告制度",
    "对传染病疫情应依法及时报告",
)
_ZH_FILL = "的了是在有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理世车"
_PUNCT = "，。；"
_DEFAULT_MIN_LEN = 6
_DEFAULT_SPAN = 30
_MAX_DEPTH = 8


class SchemaError(ValueError):
    """The schema is invalid or uses a keyword combination the generator cannot satisfy."""


def chinese_text(rng: random.Random, min_len: int = 0, max_len: int | None = None) -> str:
    """Chinese text whose length (in code points, as JSON Schema counts) lies in [min_len, max_len]."""
    if max_len is not None and max_len < min_len:
        raise SchemaError(f"minLength {min_len} > maxLength {max_len}")
    low = max(min_len, 0)
    high = max_len if max_len is not None else max(low, _DEFAULT_MIN_LEN) + _DEFAULT_SPAN
    low = max(low, min(_DEFAULT_MIN_LEN, high))  # a few characters at least, when the bounds allow
    target = rng.randint(low, min(high, low + 200))
    parts: list[str] = []
    size = 0
    while size < target:
        frag = rng.choice(_ZH_FRAGMENTS) + rng.choice(_PUNCT)
        parts.append(frag)
        size += len(frag)
    return "".join(parts)[:target]


def chinese_answer(rng: random.Random, sentences: int | None = None) -> str:
    """A plain-chat answer: a few sentences of Chinese prose."""
    n = sentences if sentences is not None else rng.randint(2, 5)
    return "".join(rng.choice(_ZH_FRAGMENTS) + "。" for _ in range(n))


def count_tokens(text: str) -> int:
    """Rough token count: one per non-ASCII (CJK) character, one per four ASCII characters."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return len(text) - ascii_chars + (ascii_chars + 3) // 4


def generate(schema: dict[str, Any], rng: random.Random) -> Any:
    """A value valid under `schema` (a JSON schema dict; `$defs`/`definitions` resolved from its root)."""
    if not isinstance(schema, dict):
        raise SchemaError(f"schema must be an object, got {type(schema).__name__}")
    return _Gen(schema, rng).value(schema, 0)


def find_embedded_schema(texts: list[str]) -> dict[str, Any] | None:
    """The largest JSON schema written inside prompt texts, if any.

    `json_object` requests carry no schema; clients (langchain json_mode, medes' llm layer) put it in
    the prompt. The simulator honours it so json-mode clients get content their parser accepts.
    """
    decoder = json.JSONDecoder()
    best: dict[str, Any] | None = None
    best_size = 0
    for text in texts:
        pos = text.find("{")
        while pos >= 0:
            try:
                obj, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                pos = text.find("{", pos + 1)
                continue
            if isinstance(obj, dict) and (
                "properties" in obj or "$defs" in obj or obj.get("type") == "object"
            ):
                if end - pos > best_size:
                    best, best_size = obj, end - pos
            pos = text.find("{", end)
    return best


def corrupt_types(value: Any) -> Any:
    """The same shape with every leaf (or the top value) replaced by a value of another JSON type."""
    if isinstance(value, dict):
        return {k: _other_type(v) for k, v in value.items()} or {"意外字段": 1}
    return _other_type(value)


def _other_type(v: Any) -> Any:
    if isinstance(v, bool):
        return "是"
    if isinstance(v, int | float):
        return "不是数字"
    if isinstance(v, str):
        return 12345
    if isinstance(v, list):
        return "不是列表"
    if isinstance(v, dict):
        return "不是对象"
    return 0


class _Gen:
    """One generation pass: holds the root schema (for `$ref`) and the random source."""

    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                raise SchemaError(f"only local $ref is supported, got {ref!r}")
            target: Any = self.root
            for part in ref[1:].split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise SchemaError(f"unresolvable $ref {ref!r}")
                target = target[part]
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings}
            seen += 1
            if seen > 50:
                raise SchemaError(f"$ref cycle at {ref!r}")
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                sub = self.resolve(sub)
                for key, val in sub.items():
                    if key == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **val}
                    elif key == "required":
                        merged["required"] = sorted({*merged.get("required", []), *val})
                    else:
                        merged.setdefault(key, val)
            schema = merged
        return schema

    def value(self, schema: dict[str, Any] | bool, depth: int) -> Any:
        if schema is True or schema == {}:
            return chinese_text(self.rng, 2, 12)
        if schema is False:
            raise SchemaError("schema `false` admits no value")
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            if not schema["enum"]:
                raise SchemaError("empty enum")
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.value(self._pick_branch(schema[key], depth), depth)
        if "default" in schema and depth >= _MAX_DEPTH:
            return schema["default"]
        typ = schema.get("type")
        if isinstance(typ, list):
            typ = self._pick_type(typ, depth)
        if typ is None:
            typ = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if schema.get("nullable") and depth >= _MAX_DEPTH:
            return None
        make = getattr(self, f"_{typ}", None)
        if make is None:
            raise SchemaError(f"unknown type {typ!r}")
        return make(schema, depth)

    def field(self, name: str, schema: dict[str, Any] | bool, depth: int) -> Any:
        """A property's value: scenario-shaped text for the fields `scenario_text` knows, when the
        property is a plain string whose length bounds that text fits; otherwise `value`."""
        compose = scenario_text.FIELDS.get(name)
        if compose is not None and isinstance(schema, dict):
            resolved = self.resolve(schema)
            plain = resolved.get("type") == "string" and not (
                {"enum", "const", "pattern", "format"} & resolved.keys()
            )
            if plain:
                max_len = resolved.get("maxLength")
                text = compose(self.rng, int(max_len) if max_len is not None else None)
                if len(text) >= int(resolved.get("minLength", 0)):
                    return text
        return self.value(schema, depth)

    def _pick_branch(self, branches: list[Any], depth: int) -> Any:
        if not branches:
            raise SchemaError("empty anyOf/oneOf")
        nulls = [b for b in branches if isinstance(b, dict) and b.get("type") == "null"]
        others = [b for b in branches if b not in nulls]
        if nulls and (not others or depth >= _MAX_DEPTH or self.rng.random() < 0.15):
            return nulls[0]
        return self.rng.choice(others)

    def _pick_type(self, types: list[str], depth: int) -> str:
        others = [t for t in types if t != "null"]
        if "null" in types and (not others or depth >= _MAX_DEPTH or self.rng.random() < 0.15):
            return "null"
        return self.rng.choice(others)

    def _null(self, schema: dict[str, Any], depth: int) -> None:
        return None

    def _boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self.rng.random() < 0.5

    def _integer(self, schema: dict[str, Any], depth: int) -> int:
        low, high = _bounds(schema, integer=True)
        if schema.get("multipleOf"):
            return int(self._multiple(schema["multipleOf"], low, high))
        return self.rng.randint(low, high)

    def _number(self, schema: dict[str, Any], depth: int) -> float | int:
        low, high = _bounds(schema, integer=False)
        if schema.get("multipleOf"):
            return self._multiple(schema["multipleOf"], low, high)
        x = round(self.rng.uniform(low, high), 2)
        return min(max(x, low), high)

    def _multiple(self, step: float, low: float, high: float) -> float:
        first = -(-low // step)
        last = high // step
        if first > last:
            raise SchemaError(f"no multiple of {step} in [{low}, {high}]")
        return self.rng.randint(int(first), int(last)) * step

    def _string(self, schema: dict[str, Any], depth: int) -> str:
        min_len = int(schema.get("minLength", 0))
        max_len = schema.get("maxLength")
        max_len = int(max_len) if max_len is not None else None
        fmt = schema.get("format")
        if fmt in _FORMATS:
            return _FORMATS[fmt](self.rng)
        pattern = schema.get("pattern")
        if pattern:
            return self._from_pattern(pattern, min_len, max_len)
        return chinese_text(self.rng, min_len, max_len)

    def _from_pattern(self, pattern: str, min_len: int, max_len: int | None) -> str:
        compiled = re.compile(pattern)
        tree = sre_parse.parse(pattern)
        for _ in range(50):
            text = _regex_sample(tree, self.rng)
            if compiled.search(text) and min_len <= len(text) <= (
                max_len if max_len is not None else len(text)
            ):
                return text
        raise SchemaError(f"could not generate a string for pattern {pattern!r} within length bounds")

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        min_items = int(schema.get("minItems", 0))
        max_items = schema.get("maxItems")
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        if max_items is not None and int(max_items) < min_items:
            raise SchemaError(f"minItems {min_items} > maxItems {max_items}")
        high = int(max_items) if max_items is not None else min_items + 3
        low = min_items if depth >= _MAX_DEPTH else max(min_items, min(1, high))
        n = max(self.rng.randint(low, min(high, low + 3)), len(prefix) if items is False else 0)
        out: list[Any] = []
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else items
            val = self.value(sub, depth + 1)
            if schema.get("uniqueItems"):
                for _ in range(20):
                    if val not in out:
                        break
                    val = self.value(sub, depth + 1)
                else:
                    if len(out) >= min_items:
                        break
                    raise SchemaError("could not generate enough unique items")
            out.append(val)
        return out

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        out: dict[str, Any] = {}
        for name, sub in props.items():
            # Optional fields are filled too (richer output) except deep inside recursive schemas.
            if name in required or depth < _MAX_DEPTH - 2:
                out[name] = self.field(name, sub, depth + 1)
        for name in required - out.keys():
            extra = schema.get("additionalProperties", True)
            out[name] = self.value(extra if isinstance(extra, dict) else {}, depth + 1)
        extra = schema.get("additionalProperties")
        min_props = int(schema.get("minProperties", 0))
        i = 0
        while len(out) < min_props:
            if extra is False:
                raise SchemaError("minProperties needs more keys than additionalProperties=false allows")
            i += 1
            out[f"字段{i}"] = self.value(extra if isinstance(extra, dict) else {}, depth + 1)
        return out


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[Any, Any]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    ex_low = schema.get("exclusiveMinimum")
    ex_high = schema.get("exclusiveMaximum")
    if ex_low is True:  # draft-4 boolean form
        ex_low, low = low, None
    if ex_high is True:
        ex_high, high = high, None
    eps = 1 if integer else 0.01
    if isinstance(ex_low, int | float) and not isinstance(ex_low, bool):
        low = max(low, ex_low + eps) if low is not None else ex_low + eps
    if isinstance(ex_high, int | float) and not isinstance(ex_high, bool):
        high = min(high, ex_high - eps) if high is not None else ex_high - eps
    if low is None and high is None:
        low, high = 0, 100
    elif low is None:
        low = high - 100
    elif high is None:
        high = low + 100
    if integer:
        low, high = int(-(-low // 1)), int(high // 1)
    if low > high:
        raise SchemaError(f"empty range [{low}, {high}]")
    return low, high


_FORMATS = {
    "date-time": lambda r: (
        f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z"
    ),
    "date": lambda r: f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00",
    "email": lambda r: f"user{r.randint(1, 9999)}@example.com",
    "uri": lambda r: f"https://example.com/doc/{r.randint(1, 9999)}",
    "url": lambda r: f"https://example.com/doc/{r.randint(1, 9999)}",
    "uuid": lambda r: str(uuid.UUID(int=r.getrandbits(128), version=4)),
    "ipv4": lambda r: ".".join(str(r.randint(1, 254)) for _ in range(4)),
}

_CATEGORY_CHARS = {
    sre_c.CATEGORY_DIGIT: "0123456789",
    sre_c.CATEGORY_WORD: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_",
    sre_c.CATEGORY_SPACE: " ",
    sre_c.CATEGORY_NOT_DIGIT: "abcxyz医患",
    sre_c.CATEGORY_NOT_WORD: "-+.,",
    sre_c.CATEGORY_NOT_SPACE: "abc123医",
}


def _regex_sample(tree: Any, rng: random.Random) -> str:
    """A random string from a parsed regex (the subset schemas use: classes, repeats, groups, branches)."""
    out: list[str] = []
    for op, arg in tree:
        if op is sre_c.LITERAL:
            out.append(chr(arg))
        elif op is sre_c.NOT_LITERAL:
            out.append("a" if arg != ord("a") else "b")
        elif op is sre_c.ANY:
            out.append(rng.choice("abc医生"))
        elif op is sre_c.IN:
            out.append(_class_sample(arg, rng))
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
            low, high, sub = arg
            high = low + 3 if high is sre_c.MAXREPEAT else high
            out.extend(_regex_sample(sub, rng) for _ in range(rng.randint(low, min(high, low + 5))))
        elif op is sre_c.SUBPATTERN:
            out.append(_regex_sample(arg[-1], rng))
        elif op is sre_c.BRANCH:
            out.append(_regex_sample(rng.choice(arg[1]), rng))
        elif op is sre_c.ATOMIC_GROUP:
            out.append(_regex_sample(arg, rng))
        elif op is sre_c.AT:
            continue  # anchors add no characters
        else:
            raise SchemaError(f"regex construct {op} is not supported by the generator")
    return "".join(out)


def _class_sample(items: list[tuple[Any, Any]], rng: random.Random) -> str:
    if items and items[0][0] is sre_c.NEGATE:
        excluded = items[1:]
        for ch in "aZ0医_-":
            if not _class_contains(excluded, ch):
                return ch
        raise SchemaError("negated character class excludes every candidate")
    op, arg = rng.choice(items)
    if op is sre_c.LITERAL:
        return chr(arg)
    if op is sre_c.RANGE:
        return chr(rng.randint(arg[0], arg[1]))
    if op is sre_c.CATEGORY:
        return rng.choice(_CATEGORY_CHARS[arg])
    raise SchemaError(f"character class item {op} is not supported by the generator")


def _class_contains(items: list[tuple[Any, Any]], ch: str) -> bool:
    return bool(re.fullmatch("[" + "".join(_class_src(op, arg) for op, arg in items) + "]", ch))


def _class_src(op: Any, arg: Any) -> str:
    if op is sre_c.LITERAL:
        return re.escape(chr(arg))
    if op is sre_c.RANGE:
        return f"{re.escape(chr(arg[0]))}-{re.escape(chr(arg[1]))}"
    return {
        sre_c.CATEGORY_DIGIT: r"\d",
        sre_c.CATEGORY_WORD: r"\w",
        sre_c.CATEGORY_SPACE: r"\s",
        sre_c.CATEGORY_NOT_DIGIT: r"\D",
        sre_c.CATEGORY_NOT_WORD: r"\W",
        sre_c.CATEGORY_NOT_SPACE: r"\S",
    }[arg]
