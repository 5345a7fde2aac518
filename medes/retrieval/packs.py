"""Corpus packs and plain corpus directories → one `IngestReport` of provisions.

A pack is a directory with `pack.yaml` (id, name, sources with official titles and metadata) and
statute-style text files; metadata in the manifest overrides what the parser infers. A plain
directory (no `pack.yaml`) or a single file is ingested too, with titles read from the files and
pack id `dir:<dirname>`. Every file gets a `FileReport`; nothing a file contains stops an ingest.

Ids must be unique across the whole corpus. When two files of the same title collide and their
versions differ (LawRefBook keeps e.g. 生物安全法 2020 and 2024), the newest keeps the plain id
`<title>#<article>` and older ones are qualified as `<title>@<date>#<article>`; other collisions
keep the first provision and report the rest.

The built-in pack lives at `corpora/cn-medical-ethics-core` in the repository. `medes/_corpora` is
a symlink to `../corpora`, and pyproject's package-data lists `_corpora/**`, so sdist and wheel
carry real copies of every pack; `builtin_pack_dir()` looks there first and falls back to the
checkout's `corpora/` (e.g. where a checkout turned the symlink into a plain file).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    computed_field,
    field_validator,
)

from medes.records import Provision, Source
from medes.retrieval.parser import (
    DEFAULT_MAX_BYTES,
    ParseResult,
    date_from_file_name,
    extract_citations,
    parse_file,
)

BUILTIN_PACK = "cn-medical-ethics-core"
MANIFEST = "pack.yaml"
PRINCIPLES_LEVEL = "伦理原则"
"""Level of a pack's own statements of principle: they restate no single official article."""
TEXT_SUFFIXES = (".md", ".txt")
# Documentation that sits beside corpus files (e.g. ../shared/corpora/laws/SOURCES.md) is not a norm.
_DOC_STEMS = ("readme", "sources", "license", "licence", "changelog", "notice", "contributing")


class PackError(ValueError):
    """A pack manifest that cannot be used; the message names the file and the problem."""


def _date_to_str(value: object) -> object:
    # YAML reads an unquoted 2022-03-01 as a date; records keep ISO strings.
    return value.isoformat() if isinstance(value, dt.date) else value


class PackSource(BaseModel):
    """One file of a pack and the official metadata of the text it holds."""

    model_config = ConfigDict(extra="forbid")

    file: str
    """Path relative to the pack directory."""
    title: str
    """Official title; provision ids are `<title>#<article>`."""
    level: str = ""
    issuer: str = ""
    effective_date: str = ""
    kind: Literal["summary", "official"] = "official"
    """summary = our own-words restatement of an official text; official = verbatim official text."""

    _dates = field_validator("effective_date", mode="before")(_date_to_str)


class PackManifest(BaseModel):
    """`pack.yaml`: who wrote the pack, under which licence, and what each file is."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str = ""
    jurisdiction: str = ""
    language: str = ""
    description: str = ""
    licence: str = ""
    sources: list[PackSource] = Field(min_length=1)


class FileReport(BaseModel):
    file: str
    status: Literal["ok", "warning", "skipped"]
    n_provisions: int = 0
    message: str = ""
    pack: str = ""
    shape: str = ""
    """How the parser read the file: articles, amendment_items, clauses, text (or empty)."""
    kind: Literal["summary", "official"] = "official"
    """From the pack manifest; files outside packs count as official text."""


class IngestReport(BaseModel):
    """Everything an ingest produced and every per-file problem it met."""

    provisions: list[Provision] = Field(default_factory=list)
    files: list[FileReport] = Field(default_factory=list)
    packs: list[PackManifest] = Field(default_factory=list)
    fingerprint: str = ""
    """sha256 over the sorted (id, text) pairs: changes iff the citable content changes."""

    _origins: list[int] = PrivateAttr(default_factory=list)
    """For each provision, the index of its `FileReport` (to report id collisions per file)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return bool(self.provisions)

    def problems(self) -> list[FileReport]:
        return [f for f in self.files if f.status != "ok"]


# ---------------------------------------------------------------------------- manifests


def read_manifest(pack_dir: Path) -> PackManifest:
    """Parse and validate `pack.yaml`; raise `PackError` with the file and the reason."""
    path = Path(pack_dir) / MANIFEST
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PackError(f"{path}: cannot read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise PackError(f"{path}: not UTF-8: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PackError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PackError(f"{path}: expected a mapping with id/name/sources, got {type(raw).__name__}")
    try:
        return PackManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise PackError(f"{path}: invalid manifest: {problems}") from exc


def _builtin_candidates() -> tuple[Path, ...]:
    package = Path(__file__).resolve().parents[1]
    return package / "_corpora" / BUILTIN_PACK, package.parent / "corpora" / BUILTIN_PACK


def builtin_pack_dir() -> Path:
    """The shipped `cn-medical-ethics-core` pack: inside the installed package, else the checkout."""
    candidates = _builtin_candidates()
    for candidate in candidates:
        if (candidate / MANIFEST).is_file():
            return candidate
    raise FileNotFoundError(
        f"built-in pack {BUILTIN_PACK} not found; looked in {', '.join(map(str, candidates))}"
    )


# ---------------------------------------------------------------------------- loading


def load_pack(pack_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> IngestReport:
    """One pack directory. Raises `PackError` only when its manifest is unusable."""
    return _finish(_load_pack(Path(pack_dir), max_bytes=max_bytes))


def load_corpus(paths: Iterable[Path], *, max_bytes: int = DEFAULT_MAX_BYTES) -> IngestReport:
    """Pack directories, plain directories (every .md/.txt below, sorted) and single files."""
    parts = IngestReport()
    for path in map(Path, paths):
        if not path.exists():
            parts.files.append(FileReport(file=str(path), status="skipped", message="path does not exist"))
        elif path.is_dir():
            _merge(parts, _load_dir(path, max_bytes=max_bytes))
        else:
            result = parse_file(
                path, pack=f"dir:{path.parent.name}", max_bytes=max_bytes, check_numbering=True
            )
            _add(parts, path, result)
    return _finish(parts)


def _load_dir(root: Path, *, max_bytes: int) -> IngestReport:
    if (root / MANIFEST).is_file():
        try:
            return _load_pack(root, max_bytes=max_bytes)
        except PackError as exc:
            return IngestReport(
                files=[FileReport(file=str(root / MANIFEST), status="skipped", message=str(exc))]
            )
    report = IngestReport()
    pack = f"dir:{root.name}"
    for path in sorted(root.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            _merge(report, _load_dir(path, max_bytes=max_bytes))
        elif path.suffix.lower() in TEXT_SUFFIXES:
            if path.stem.lower().startswith(_DOC_STEMS):
                report.files.append(
                    FileReport(
                        file=str(path),
                        status="skipped",
                        pack=pack,
                        message="documentation file, not a norm text",
                    )
                )
                continue
            source = Source(
                title="", file=str(path.relative_to(root)), effective_date=date_from_file_name(path.name)
            )
            result = parse_file(path, source=source, pack=pack, max_bytes=max_bytes, check_numbering=True)
            _add(report, path, result)
    return report


def _load_pack(pack_dir: Path, *, max_bytes: int) -> IngestReport:
    manifest = read_manifest(pack_dir)
    report = IngestReport(packs=[manifest])
    listed = set()
    summaries: list[tuple[ParseResult, bool]] = []
    for entry in manifest.sources:
        path = pack_dir / entry.file
        listed.add(path.resolve())
        if not path.is_file():
            report.files.append(
                FileReport(
                    file=str(path),
                    status="skipped",
                    pack=manifest.id,
                    message=f"listed in {pack_dir / MANIFEST} but missing",
                )
            )
            continue
        source = Source(
            title=entry.title,
            level=entry.level,
            issuer=entry.issuer,
            effective_date=entry.effective_date,
            file=entry.file,
        )
        result = parse_file(
            path,
            source=source,
            pack=manifest.id,
            max_bytes=max_bytes,
            check_numbering=entry.kind == "official",
        )
        if entry.kind == "summary":
            summaries.append((result, entry.level != PRINCIPLES_LEVEL))
        _add(report, path, result)
        report.files[-1].kind = entry.kind
    titles = {s.title for s in manifest.sources}
    for result, restates in summaries:
        unresolved = _set_cites(result.provisions, titles, restates_own_article=restates)
        if unresolved:
            index = next(
                i for i, f in enumerate(report.files) if f.file == str(pack_dir / result.source.file)
            )
            note = f"cites titles not in this pack (kept as written): {'、'.join(sorted(unresolved))}"
            report.files[index].message = "; ".join(m for m in (report.files[index].message, note) if m)
    for path in sorted(pack_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES and path.resolve() not in listed:
            if not path.stem.lower().startswith(_DOC_STEMS):
                report.files.append(
                    FileReport(
                        file=str(path),
                        status="skipped",
                        pack=manifest.id,
                        message=f"not listed in {MANIFEST}; ignored",
                    )
                )
    return report


def _set_cites(provisions: list[Provision], titles: set[str], *, restates_own_article: bool) -> set[str]:
    """A summary cites the official provisions it restates: the official article of its own title
    and number (except statements of principle, level `伦理原则`), plus those its text names
    (`依据：《医师法》第二十五条…`). Returns the cited titles that are not in the pack."""
    unresolved: set[str] = set()
    for provision in provisions:
        cites = [provision.id] if restates_own_article else []
        for short, label in extract_citations(provision.text):
            title = _resolve_title(short, titles)
            if title not in titles:
                unresolved.add(title)
            cites.append(f"{title}#{label}")
        provision.cites = list(dict.fromkeys(cites))
    return unresolved


def _resolve_title(short: str, titles: set[str]) -> str:
    """`医师法` → `中华人民共和国医师法`: texts cite laws by their short names."""
    for candidate in (short, f"中华人民共和国{short}"):
        if candidate in titles:
            return candidate
    if short.endswith("法") and not short.startswith("中华人民共和国"):
        return f"中华人民共和国{short}"  # national laws carry the prefix in their official title
    return short


def _add(report: IngestReport, path: Path, result: ParseResult) -> None:
    report._origins.extend([len(report.files)] * len(result.provisions))
    report.provisions.extend(result.provisions)
    report.files.append(
        FileReport(
            file=str(path),
            status=result.status,
            n_provisions=len(result.provisions),
            message="; ".join(result.messages),
            pack=result.provisions[0].pack if result.provisions else "",
            shape=result.shape if result.status != "skipped" else "",
        )
    )


def _merge(into: IngestReport, part: IngestReport) -> None:
    offset = len(into.files)
    into._origins.extend(o + offset for o in part._origins)
    into.provisions.extend(part.provisions)
    into.files.extend(part.files)
    into.packs.extend(part.packs)


def _finish(report: IngestReport) -> IngestReport:
    _resolve_duplicates(report)
    report.fingerprint = fingerprint(report.provisions)
    return report


def _resolve_duplicates(report: IngestReport) -> None:
    """Make ids unique across files.

    Official text beats a summary of the same article; among official texts of one title, the
    newest version keeps the plain id and older ones get `<title>@<date>#<article>`; any other
    collision keeps the first provision. Each file's report says what happened to its ids.
    """
    provisions, origins = report.provisions, report._origins

    def is_summary(i: int) -> bool:
        return report.files[origins[i]].kind == "summary"

    def date(i: int) -> str:
        return provisions[i].source.effective_date

    groups: dict[str, list[int]] = {}
    for i, p in enumerate(provisions):
        groups.setdefault(p.id, []).append(i)
    notes: dict[int, dict[str, list[int]]] = {}  # file index → note kind → winning file indexes
    superseded: set[int] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        official = [i for i in members if not is_summary(i)]
        pool = official or members
        keeper = pool[0]
        if all(date(i) for i in pool):
            keeper = next(i for i in pool if date(i) == max(date(j) for j in pool))
        for i in members:
            if i == keeper:
                continue
            if is_summary(i) and official:
                superseded.add(i)
                note = "summary"
            elif date(i) and date(keeper) and date(i) < date(keeper):
                p = provisions[i]
                p.id = f"{p.source.title}@{date(i)}#{p.id.split('#', 1)[1]}"
                note = "qualified"
            else:
                continue  # a plain duplicate: the first-come pass below drops all but the first
            notes.setdefault(origins[i], {}).setdefault(note, []).append(origins[keeper])
    holder: dict[str, int] = {}
    kept: list[Provision] = []
    kept_origins: list[int] = []
    for i, (p, origin) in enumerate(zip(provisions, origins, strict=True)):
        if i in superseded:
            continue
        if p.id in holder:
            notes.setdefault(origin, {}).setdefault("duplicate", []).append(holder[p.id])
            continue
        holder[p.id] = origin
        kept.append(p)
        kept_origins.append(origin)
    report.provisions, report._origins = kept, kept_origins
    for index, kinds in sorted(notes.items()):
        file_report = report.files[index]
        messages = [file_report.message] if file_report.message else []
        for kind, template in _COLLISION_NOTES.items():
            if kind in kinds:
                winners = ", ".join(report.files[j].file for j in sorted(set(kinds[kind])))
                messages.append(template.format(n=len(kinds[kind]), winners=winners))
        file_report.message = "; ".join(messages)
        file_report.n_provisions = kept_origins.count(index)
        file_report.status = "warning" if file_report.n_provisions else "skipped"


_COLLISION_NOTES = {
    "summary": "{n} summaries superseded by the official text in {winners}; dropped",
    "qualified": "{n} ids shared with the newer version {winners}; ids qualified as <title>@<date>#<article>",
    "duplicate": "{n} duplicate ids already provided by {winners}; dropped",
}


def fingerprint(provisions: Iterable[Provision]) -> str:
    digest = hashlib.sha256()
    for pid, text in sorted((p.id, p.text) for p in provisions):
        digest.update(f"{pid}\x1f{text}\x1e".encode())
    return digest.hexdigest()
