"""Statute-style text → citable `Provision`s (one per article 第X条, item, clause or text chunk).

Input is the markdown layout of LawRefBook/Laws and of our own packs: a `# 标题` line (the 民法典
books add a second `# 编名` line), optional history lines ended by an HTML comment `INFO END` (the marker
is optional), `##`/`###`/`####` headings for 编/章/节, and articles that start a line with `第X条`
followed by a space. Files without articles (amendment instruments, technical standards, court case
summaries) are still ingested, in a shape chosen per file and reported, because a corpus ingest
must never lose a file silently nor stop on one. Plain `.txt` files follow the same rules.

Reading bytes (encoding, size, binary) lives here too, so that every per-file problem ends up as a
message on the file's `ParseResult` instead of an exception.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medes.records import Provision, Source

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
INFO_END = re.compile(r"^<!--\s*INFO\s+END\s*-->$", re.MULTILINE)
"""The comment line that ends the title/history header (whitespace inside it tolerated)."""

Shape = Literal["articles", "amendment_items", "clauses", "text", "none"]
Status = Literal["ok", "warning", "skipped"]

_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000}
_DIGIT_CHARS = "零一二三四五六七八九"
_CN = "零〇一二两三四五六七八九十百千万"

# Characters that upstream texts scatter in headings and labels and that must never reach an id.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_SPACES = re.compile(r"\s+")  # Unicode-aware: U+3000, NBSP, U+2002 (民法典 headings), tabs

_ARTICLE = re.compile(rf"^(第(?:[{_CN}]+|\d+)条(?:之[{_CN}]+)?)(?:\s+(.*))?$")
_HEADING_MD = re.compile(r"^(#{1,6})\s*(.*?)\s*#*$")
# 编/章/节 headings written as plain lines (.txt files): short, no sentence punctuation.
_HEADING_PLAIN = re.compile(rf"^第[{_CN}\d]+([编章节])(?:\s+([^。；，：]{{1,40}}))?$")
_PLAIN_LEVEL = {"编": 2, "章": 3, "节": 4}
_ITEM = re.compile(rf"^([{_CN}]+)、(.*)$")
_CLAUSE = re.compile(r"^(\d+(?:\.\d+)+)\.?(?:\s+(.*))?$")
_HISTORY = re.compile(r"^\d{4}年\d{1,2}月\d{1,2}日")
_SPACED_NAME = re.compile(rf"^(第[{_CN}\d]+[编章节])\s+((?:\S\s){{1,3}}\S)$")
_EFFECTIVE = re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日\s*(?:起)?施行")
# An upstream conversion defect: `…施行。第六章附则第四十条本条例…` inside one line.
_GLUED = re.compile(rf"。[ \t\u3000]*(?:第[{_CN}]+[编章节]|附[ \t\u3000]*则)\S{{0,12}}")
# A chapter heading that lost its `##` upstream (人体器官捐献和移植条例: a bare `附 则` line).
_BARE_CHAPTER = re.compile(r"^(?:总|附)\s*则$")
_FILE_DATE = re.compile(r"[(（](\d{4}-\d{2}-\d{2})[)）]$")

_UNIT_NAME = {"articles": "article", "amendment_items": "item", "clauses": "clause", "text": "paragraph"}

TEXT_WHOLE_MAX_CHARS = 4000
"""Article-less prose up to this size stays one `全文` provision; longer prose is chunked."""
TEXT_CHUNK_CHARS = 1500
PREAMBLE_MIN_CHARS = 15
"""Text before the first article shorter than this (e.g. a stray `附：`) is not worth a provision."""


# ---------------------------------------------------------------------------- numerals and labels


def cn_numeral_to_int(text: str) -> int:
    """`二百三十四` → 234, `一千零五十三` → 1053, `十七` → 17, `二〇二三` → 2023, `12` → 12."""
    s = text.strip()
    if not s:
        raise ValueError("empty numeral")
    if s.isdecimal():
        return int(s)
    if len(s) > 1 and all(c in _DIGITS for c in s):
        return int("".join(str(_DIGITS[c]) for c in s))
    total = section = 0
    digit: int | None = None
    for char in s:
        if char in _DIGITS:
            digit = _DIGITS[char]
        elif char in _UNITS:
            unit = _UNITS[char]
            if unit == 10_000:
                total += (section + (digit or 0)) * unit
                section = 0
            else:
                section += (1 if digit is None else digit) * unit
            digit = None
        else:
            raise ValueError(f"not a Chinese numeral: {text!r}")
    return total + section + (digit or 0)


def int_to_cn_numeral(n: int) -> str:
    """234 → `二百三十四`, 110 → `一百一十`, 1010 → `一千零一十`: the form statutes use in labels."""
    if n < 0:
        raise ValueError(f"negative numeral: {n}")
    if n == 0:
        return "零"
    if n >= 10_000:
        high, low = divmod(n, 10_000)
        if low == 0:
            return f"{int_to_cn_numeral(high)}万"
        return f"{int_to_cn_numeral(high)}万{'零' if low < 1000 else ''}{_small_cn(low, leading=False)}"
    return _small_cn(n, leading=True)


def _small_cn(n: int, *, leading: bool) -> str:
    parts: list[str] = []
    zero_pending = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // value % 10
        if d == 0:
            zero_pending = zero_pending or bool(parts)
            continue
        if zero_pending:
            parts.append("零")
            zero_pending = False
        if value == 10 and d == 1 and not parts and leading:
            parts.append("十")  # 十七, never 一十七, at the start of a number
        else:
            parts.append(_DIGIT_CHARS[d] + unit)
    return "".join(parts)


def article_label(number: int, suffix: str | int = "") -> str:
    """`article_label(234, suffix="之一")` → `第二百三十四条之一` (an int suffix 1 means `之一`)."""
    if isinstance(suffix, int):
        suffix = f"之{int_to_cn_numeral(suffix)}" if suffix else ""
    return f"第{int_to_cn_numeral(number)}条{suffix}"


def article_number(label: str) -> tuple[int, int]:
    """`第二百三十四条之一` → (234, 1); order of articles, for sorting and range checks."""
    match = re.fullmatch(rf"第([{_CN}]+|\d+)条(?:之([{_CN}]+))?", normalize_label(label))
    if not match:
        raise ValueError(f"not an article label: {label!r}")
    return cn_numeral_to_int(match.group(1)), cn_numeral_to_int(match.group(2)) if match.group(2) else 0


_CITED_TITLE = re.compile(r"《([^《》]{1,60})》")
_CITED_ARTICLES = re.compile(rf"(?:\s*(?:、|，|,|和|及|以及|至|到)?\s*第[{_CN}]+条(?:之[{_CN}]+)?)+")
_CITED_ONE = re.compile(rf"(至|到)?\s*(第[{_CN}]+条(?:之[{_CN}]+)?)")


def extract_citations(text: str) -> list[tuple[str, str]]:
    """`《医师法》第二十三条和第二十九条、《药品管理法》第二十条至第二十二条` → (title, label) pairs.

    Titles are returned as written (often abbreviated); ranges `第A条至第B条` are expanded.
    """
    found: list[tuple[str, str]] = []
    for match in _CITED_TITLE.finditer(text):
        title = normalize_label(match.group(1))
        run = _CITED_ARTICLES.match(text, match.end())
        if not run:
            continue
        previous: str | None = None
        for one in _CITED_ONE.finditer(run.group(0)):
            label = one.group(2)
            if one.group(1) and previous:
                (start, _), (end, _) = article_number(previous), article_number(label)
                found.extend((title, article_label(n)) for n in range(start + 1, end))
            found.append((title, label))
            previous = label
    return list(dict.fromkeys(found))


def normalize_label(text: str) -> str:
    """Headings and labels: drop zero-width characters, fold U+3000/NBSP/tab runs into one space."""
    return _SPACES.sub(" ", text.translate(_INVISIBLE)).strip()


def _normalize_heading(text: str) -> str:
    """Also undo typographic letter-spacing in short chapter names: `第一章 总 则` → `第一章 总则`."""
    name = normalize_label(text)
    if _BARE_CHAPTER.match(name):
        return name.replace(" ", "")
    spaced = _SPACED_NAME.match(name)
    return f"{spaced.group(1)} {spaced.group(2).replace(' ', '')}" if spaced else name


def _clean_line(line: str) -> str:
    return line.translate(_INVISIBLE).strip()


# ---------------------------------------------------------------------------- results


@dataclass
class ParseResult:
    """What one file yields: its provisions, the shape it was read as, and what went wrong."""

    source: Source
    provisions: list[Provision] = field(default_factory=list)
    shape: Shape = "none"
    status: Status = "ok"
    messages: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    """Adoption/amendment lines from the header (`YYYY年M月D日 …`)."""

    def warn(self, message: str) -> None:
        self.messages.append(message)
        if self.status == "ok":
            self.status = "warning"

    def skip(self, message: str) -> ParseResult:
        self.messages.append(message)
        self.status = "skipped"
        self.provisions = []
        return self


@dataclass
class _Unit:
    label: str
    path: list[str]
    lines: list[str]
    line_no: int
    headed: bool = False
    """Started by a heading: dropped when nothing but the heading title follows."""
    n_title_lines: int = 0


# ---------------------------------------------------------------------------- parsing


def parse_text(text: str, *, source: Source, pack: str = "", check_numbering: bool = False) -> ParseResult:
    """Parse one decoded file. `source.title` empty means: infer it from the text (or `source.file`).

    `check_numbering` reports gaps in article numbers; only meaningful for complete official texts
    (a summary pack restates selected articles, so gaps there are by design).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    header_titles, history, body_start = _split_header(lines)
    title = (
        normalize_label(source.title)
        or (header_titles[0] if header_titles else "")
        or _title_from_file(source.file)
    )
    book_path = header_titles[1:]
    update = {"title": title}
    if not source.effective_date:
        update["effective_date"] = _effective_date(history)
    result = ParseResult(source=source.model_copy(update=update), history=history)
    body = lines[body_start:]
    if not title:
        title = "未命名"
        result.source.title = title
        result.warn("no title line and no file name; title set to 未命名")
    if not any(_clean_line(line) for line in body):
        if header_titles or history:
            return result.skip("no body text after the title/history header")
        return result.skip("empty file")

    if any(_ARTICLE.match(_clean_line(line)) for line in body):
        result.shape = "articles"
        units = _walk(body, body_start, book_path, _article_start, result.messages)
    elif _looks_like_items(body):
        result.shape = "amendment_items"
        units = _walk(body, body_start, book_path, _item_start, result.messages)
    elif sum(bool(_clause_start(_heading_text(_clean_line(line)))) for line in body) >= 2:
        result.shape = "clauses"
        units = _walk(body, body_start, book_path, _clause_start, result.messages, clause_headings=True)
    else:
        result.shape = "text"
        units = _text_units(body, body_start, book_path)

    _emit(result, units, pack=pack)
    if check_numbering and result.shape == "articles":
        _check_numbering(result)
    if not result.provisions:
        return result.skip("no provisions found in the body")
    n = len(result.provisions)
    if result.shape == "amendment_items":
        result.warn(f"article-less, parsed as amendment items (一、二、…): {n} provisions")
    elif result.shape == "clauses":
        result.warn(f"article-less, parsed as numbered clauses/sections: {n} provisions")
    elif result.shape == "text":
        how = "one 全文 provision" if n == 1 else f"{n} text chunks"
        result.warn(f"article-less, parsed as {how}")
    return result


def parse_file(
    path: str | Path,
    *,
    source: Source | None = None,
    pack: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    check_numbering: bool = False,
) -> ParseResult:
    """Read and parse one file; unreadable, binary, huge or empty files come back `skipped`."""
    path = Path(path)
    if source is None:
        source = Source(title="", file=path.name, effective_date=date_from_file_name(path.name))
    result = ParseResult(source=source)
    text, messages, error = read_text(path, max_bytes=max_bytes)
    if error:
        return result.skip(error)
    parsed = parse_text(text or "", source=source, pack=pack, check_numbering=check_numbering)
    for message in reversed(messages):
        parsed.messages.insert(0, message)
        if parsed.status == "ok":
            parsed.status = "warning"
    return parsed


def read_text(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str | None, list[str], str | None]:
    """Decode a corpus file: (text, warnings, error). UTF-8 (BOM allowed), else GB18030, else error."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return (
                None,
                [],
                f"file too large: {size:,} bytes > limit {max_bytes:,} (raise max_bytes to ingest it)",
            )
        data = path.read_bytes()
    except OSError as exc:
        return None, [], f"cannot read file: {exc}"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), ["UTF-16 with byte-order mark; decoded as UTF-16"], None
        except UnicodeDecodeError as exc:
            return None, [], f"undecodable UTF-16: {exc.reason} at byte {exc.start}"
    if b"\x00" in data:
        return None, [], "binary file (contains NUL bytes); not a text corpus file"
    try:
        return data.decode("utf-8-sig"), [], None
    except UnicodeDecodeError as exc:
        utf8_error = exc
    try:
        return (
            data.decode("gb18030"),
            [f"not UTF-8 ({utf8_error.reason} at byte {utf8_error.start}); decoded as GB18030"],
            None,
        )
    except UnicodeDecodeError:
        return (
            None,
            [],
            f"undecodable: neither UTF-8 ({utf8_error.reason} at byte {utf8_error.start}) nor GB18030",
        )


def _split_header(lines: list[str]) -> tuple[list[str], list[str], int]:
    """(`#` title lines, history lines, index of the first body line)."""
    marker = next((i for i, line in enumerate(lines) if INFO_END.match(line.strip())), None)
    titles: list[str] = []
    history: list[str] = []
    if marker is not None:
        for line in lines[:marker]:
            clean = _clean_line(line)
            heading = _HEADING_MD.match(clean)
            if heading and len(heading.group(1)) == 1 and heading.group(2):
                titles.append(normalize_label(heading.group(2)))
            elif clean:
                history.append(clean)
        return titles, history, marker + 1
    for i, line in enumerate(lines):
        clean = _clean_line(line)
        heading = _HEADING_MD.match(clean)
        if not clean:
            continue
        if heading and len(heading.group(1)) == 1 and heading.group(2) and not history:
            titles.append(normalize_label(heading.group(2)))
        elif _HISTORY.match(clean) and (titles or history):
            history.append(clean)
        elif not titles and not history and _is_plain_title(clean):
            titles.append(normalize_label(clean))
        else:
            return titles, history, i
    return titles, history, len(lines)


def _is_plain_title(line: str) -> bool:
    """First line of a .txt file that names the document rather than starting its body."""
    return (
        len(line) <= 60
        and not any(p in line for p in "。；")
        and not _ARTICLE.match(line)
        and not _HEADING_PLAIN.match(line)
        and not _ITEM.match(line)
        and not _CLAUSE.match(line)
        and not line.startswith("#")
    )


def _title_from_file(file: str) -> str:
    if not file:
        return ""
    return normalize_label(_FILE_DATE.sub("", Path(file).stem))


def _effective_date(history: list[str]) -> str:
    """The `YYYY年M月D日 施行` history line, when the header has one (the 民法典 books do)."""
    for line in history:
        match = _EFFECTIVE.match(line)
        if match:
            year, month, day = match.groups()
            return f"{year}-{int(month):02d}-{int(day):02d}"
    return ""


def date_from_file_name(name: str) -> str:
    """LawRefBook names files `医师法(2021-08-20).md`: the date of the version the file holds."""
    match = _FILE_DATE.search(Path(name).stem)
    return match.group(1) if match else ""


def _heading_text(line: str) -> str:
    heading = _HEADING_MD.match(line)
    return normalize_label(heading.group(2)) if heading else line


def _article_start(line: str) -> tuple[str, str] | None:
    match = _ARTICLE.match(line)
    return (normalize_label(match.group(1)), match.group(2) or "") if match else None


def _item_start(line: str) -> tuple[str, str] | None:
    match = _ITEM.match(line)
    return (match.group(1), match.group(2)) if match else None


def _clause_start(line: str) -> tuple[str, str] | None:
    match = _CLAUSE.match(normalize_label(line))
    return (match.group(1), match.group(2) or "") if match else None


def _looks_like_items(body: list[str]) -> bool:
    """Amendment instruments number their items 一、二、…: at least two, the first being 一."""
    labels = [m.group(1) for m in (_ITEM.match(_clean_line(line)) for line in body) if m]
    return len(labels) >= 2 and labels[0] == "一"


def _walk(
    body: list[str],
    offset: int,
    book_path: list[str],
    start: Callable[[str], tuple[str, str] | None],
    notes: list[str],
    *,
    clause_headings: bool = False,
) -> list[_Unit]:
    """Split the body into units: a start line opens one, a heading closes it and updates the path.

    Text before the first start line becomes the `序言` unit; text after a heading that no start
    line follows (刑法's 附件一, a standard's 范围) becomes a unit labelled by that heading.
    """
    stack: list[tuple[int, str]] = [(1, name) for name in book_path]
    preamble = _Unit("序言", [name for _, name in stack], [], offset + 1)
    units: list[_Unit] = []
    current = preamble
    seen_start = False
    for i, raw in enumerate(body, start=offset + 1):
        line = _clean_line(raw)
        if not line or INFO_END.match(line):
            continue
        level_heading = _heading(line)
        if not level_heading and _BARE_CHAPTER.match(line):
            chapters = [lvl for lvl, name in stack if re.match(rf"第[{_CN}\d]+章", name)]
            level_heading = (chapters[-1] if chapters else 2, _normalize_heading(line))
            notes.append(f"line {i}: bare line {line!r} taken as a chapter heading")
        if level_heading:
            level, name = level_heading
            while stack and stack[-1][0] >= level:
                stack.pop()
            path = [n for _, n in stack]
            stack.append((level, name))
            clause = _clause_start(name) if clause_headings else None
            if clause:
                current = _Unit(clause[0], path, [clause[1]] if clause[1] else [], i, headed=True)
                current.n_title_lines = len(current.lines)
                units.append(current)
            elif seen_start or clause_headings:
                current = _Unit(name, path, [], i, headed=True)
                units.append(current)
            continue
        opened = start(line)
        if opened:
            seen_start = True
            label, rest = opened
            current = _Unit(label, [n for _, n in stack], [rest] if rest else [], i)
            units.append(current)
            continue
        current.lines.append(line)
    return [preamble, *units]


def _heading(line: str) -> tuple[int, str] | None:
    md = _HEADING_MD.match(line)
    if md:
        name = normalize_label(md.group(2))
        return (len(md.group(1)), _normalize_heading(name)) if name else None
    plain = _HEADING_PLAIN.match(line)
    if plain:
        return _PLAIN_LEVEL[plain.group(1)], _normalize_heading(line)
    return None


def _text_units(body: list[str], offset: int, book_path: list[str]) -> list[_Unit]:
    """Article-less prose (court cases): headings kept as lines; chunked on paragraphs when long."""
    paragraphs: list[str] = []
    for raw in body:
        line = _clean_line(raw)
        if not line or INFO_END.match(line):
            continue
        heading = _HEADING_MD.match(line)
        paragraphs.append(normalize_label(heading.group(2)) if heading else line)
    paragraphs = [p for p in paragraphs if p]
    if sum(len(p) for p in paragraphs) <= TEXT_WHOLE_MAX_CHARS:
        return [_Unit("全文", list(book_path), paragraphs, offset + 1)]
    units: list[_Unit] = []
    chunk: list[str] = []
    for paragraph in paragraphs:
        if chunk and sum(len(p) for p in chunk) + len(paragraph) > TEXT_CHUNK_CHARS:
            units.append(_Unit(f"片段{len(units) + 1}", list(book_path), chunk, offset + 1))
            chunk = []
        chunk.append(paragraph)
    if chunk:
        units.append(_Unit(f"片段{len(units) + 1}", list(book_path), chunk, offset + 1))
    return units


def _check_numbering(result: ParseResult) -> None:
    """Report jumps and reversals in article numbers: upstream files sometimes lose an article."""
    previous: tuple[int, int] | None = None
    for provision in result.provisions:
        try:
            number = article_number(provision.article)
        except ValueError:
            continue  # 序言 or a heading-labelled block
        if previous and number[1] == 0 and number[0] != previous[0] + 1:
            result.warn(
                f"article numbers jump from {article_label(previous[0])} to {provision.article}"
                f"{' (out of order)' if number[0] <= previous[0] else ''}"
            )
        previous = number


def _emit(result: ParseResult, units: list[_Unit], *, pack: str) -> None:
    """Units → provisions with ids unique within the file (a repeated label gets `-2`, `-3`…)."""
    title = result.source.title
    counts: Counter[str] = Counter()
    for unit in units:
        if unit.label == "序言" and result.shape != "text":
            chars = sum(len(line) for line in unit.lines)
            if chars < PREAMBLE_MIN_CHARS:
                continue
            result.messages.append(
                f"{chars} chars of text before the first {_UNIT_NAME[result.shape]} kept as 序言"
            )
        elif unit.headed and len(unit.lines) <= unit.n_title_lines:
            continue  # a heading with nothing of its own below it is only part of the path
        elif unit.headed and result.shape == "articles":
            result.messages.append(
                f"line {unit.line_no}: text under heading {unit.label!r} outside any article kept as its own provision"
            )
        counts[unit.label] += 1
        article = unit.label
        key = unit.label if counts[unit.label] == 1 else f"{unit.label}-{counts[unit.label]}"
        if counts[unit.label] > 1:
            result.warn(
                f"line {unit.line_no}: article label {unit.label} repeats in this file; id suffixed '-{counts[unit.label]}'"
            )
        if not unit.lines and result.shape == "articles":
            result.warn(f"line {unit.line_no}: {unit.label} has no text")
        glued = _GLUED.search("\n".join(unit.lines)) if result.shape == "articles" else None
        if glued:
            result.warn(
                f"line {unit.line_no}: {unit.label} contains {glued.group(0)[1:]!r}: a heading or article "
                "glued onto the text upstream; kept as is"
            )
        result.provisions.append(
            Provision(
                id=f"{title}#{key}",
                source=result.source,
                path=unit.path,
                article=article,
                text="\n".join(unit.lines),
                pack=pack,
            )
        )
