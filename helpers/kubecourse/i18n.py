"""The course in other languages: notebooks built from the English sources through gettext catalogs.

    python -m kubecourse.i18n update    # English notebooks -> catalogs: new cells untranslated, changed ones fuzzy
    python -m kubecourse.i18n status    # per notebook: translated / fuzzy / untranslated, naming each stale cell
    python -m kubecourse.i18n status --full   # ... and each stale entry's English, old English, old text
    python -m kubecourse.i18n build     # catalogs -> notebooks/zh_CN/NN_topic.py and .ipynb (`make notebooks`)
    python -m kubecourse.i18n record docs/zh_CN/runbook.md   # a translated document is current again

The English jupytext notebooks (notebooks/NN_topic.py) are the only source. Each notebook has one
catalog, notebooks/locale/<lang>/LC_MESSAGES/NN_topic.po, with one entry per markdown cell and one
per comment of the `parameters` cell. Everything else (every code cell, the code of the parameters
cell) is copied from the English notebook, so the languages run the same code.

An entry's msgid is the English text and its msgctxt a key that survives edits elsewhere in the
notebook: `md/<section>[/<n>]` (the slug of the heading a markdown cell falls under, and its place
below that heading) or `parameters/<NAME>[#<n>]` (the parameter a comment belongs to). `update`
matches cells to entries by text first (an unchanged cell keeps its translation wherever it moved),
then by key or by similar text: a changed cell's old translation is kept but marked fuzzy, with the
previous English beside it (`#| msgid`). The build uses only translated, non-fuzzy entries; anything
else stays English in the built notebook, and `status` (and the tests) name it.

After editing an English cell:

    python -m kubecourse.i18n update && python -m kubecourse.i18n status   # what is stale
    # edit the msgstr of each listed entry in its .po file and delete its `#, fuzzy` line
    make notebooks                                                        # rebuild, then commit all

Documents (docs/zh_CN/*.md) are translated whole; their first line records the git blob of the
English file they were translated from, and `status` (and a test) flags one whose source changed.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifests import repo_root

LANGUAGES = ("zh_CN",)
DEFAULT_LANGUAGE = "zh_CN"
LANGUAGE_NAMES = {"zh_CN": "简体中文 (Simplified Chinese)"}
# A changed cell whose text is at least this similar to an old entry inherits its translation, fuzzy.
FUZZY_RATIO = 0.55
WRAP_WIDTH = 100
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"\(?https?://\S+|\]\([^)]*\)")


@dataclass(frozen=True)
class Unit:
    """One translatable piece of a notebook: a markdown cell or one comment of the parameters cell."""

    key: str  # msgctxt: stable across edits to other cells
    text: str  # msgid: the English text
    cell: int  # position of the cell in the notebook
    kind: str  # "markdown" or "comment"
    row: int = 0  # comments: line (1-based) in the cell
    col: int = 0  # comments: column where "#" starts

    def where(self) -> str:
        line = f" line {self.row}" if self.kind == "comment" else ""
        return f"cell {self.cell}{line} [{self.key}]"


# --------------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------------


def english_sources() -> list[Path]:
    return sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.py"))


def catalog_path(source: Path, lang: str = DEFAULT_LANGUAGE) -> Path:
    return repo_root() / "notebooks" / "locale" / lang / "LC_MESSAGES" / f"{source.stem}.po"


def translated_path(source: Path, lang: str = DEFAULT_LANGUAGE) -> Path:
    return repo_root() / "notebooks" / lang / source.name


# --------------------------------------------------------------------------------------------------
# Extraction: which parts of a notebook are prose
# --------------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    """`## 3. Ask PromQL` -> `ask-promql` (section numbers left out: renumbering keeps the keys)."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"^[\s\d.·:)-]+", "", text).lower())
    return "-".join(words)[:60].strip("-") or "cell"


def _is_parameters(cell) -> bool:
    return cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])


def _comments(source: str) -> list[tuple[int, int, str]]:
    """(row, col, text after '# ') of every comment in a code cell."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string[1:]
            found.append((token.start[0], token.start[1], text[1:] if text[:1] == " " else text))
    return found


def _statement_names(source: str) -> list[tuple[int, int, str]]:
    """(first line, last line, assigned name) of each top-level statement of the parameters cell."""
    names = []
    for node in ast.parse(source).body:
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        name = next((t.id for t in targets if isinstance(t, ast.Name)), type(node).__name__)
        names.append((node.lineno, node.end_lineno or node.lineno, name))
    return names


def extract(notebook) -> list[Unit]:
    """The translatable units of a notebook (a jupytext/nbformat notebook), in cell order."""
    units: list[Unit] = []
    seen: dict[str, int] = {}
    section, below = "top", 0
    for position, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown" and cell.source.strip():
            first = cell.source.strip().splitlines()[0]
            if first.startswith("#"):
                section, below = slug(first.lstrip("#")), 0
            else:
                below += 1
            key = f"md/{section}" + (f"/{below}" if below else "")
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                key += f"~{seen[key]}"
            units.append(Unit(key, cell.source, position, "markdown"))
        elif _is_parameters(cell):
            statements = _statement_names(cell.source)
            count: dict[str, int] = {}
            for row, col, text in _comments(cell.source):
                owner = next((n for a, b, n in statements if a <= row <= b), None)
                if owner is None:
                    before = [n for a, b, n in statements if b < row]
                    owner = before[-1] if before else "top"
                count[owner] = count.get(owner, 0) + 1
                key = f"parameters/{owner}" + (f"#{count[owner]}" if count[owner] > 1 else "")
                units.append(Unit(key, text, position, "comment", row, col))
    return units


def _prose(text: str) -> str:
    """Text minus code blocks, inline code and link targets: what a reader reads as language."""
    return _URL.sub(" ", _INLINE_CODE.sub(" ", _FENCE.sub(" ", text)))


def needs_translation(text: str) -> bool:
    """True when the English text has words to translate (not only code, commands or numbers)."""
    return bool(re.search(r"[A-Za-z]{3,}", _prose(text)))


def looks_translated(text: str) -> bool:
    return bool(CJK.search(_prose(text)))


def code_blocks(text: str) -> list[str]:
    """Fenced code blocks: commands and code stay exactly as in the English cell."""
    return _FENCE.findall(text)


# --------------------------------------------------------------------------------------------------
# Catalogs
# --------------------------------------------------------------------------------------------------


def _polib():
    import polib

    return polib


def _new_catalog(source: Path, lang: str):
    polib = _polib()
    catalog = polib.POFile(wrapwidth=WRAP_WIDTH)
    catalog.metadata = {
        "Project-Id-Version": f"kubecourse notebooks/{source.name}",
        "Language": lang,
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=UTF-8",
        "Content-Transfer-Encoding": "8bit",
        "Plural-Forms": "nplurals=1; plural=0;",
    }
    catalog.header = (
        f"Translations of notebooks/{source.name} ({LANGUAGE_NAMES.get(lang, lang)}).\n"
        "Edit msgstr; delete the `#, fuzzy` line once a translation matches the English again.\n"
        "Regenerate the entries with `python -m kubecourse.i18n update` (see kubecourse/i18n.py)."
    )
    return catalog


def load_catalog(source: Path, lang: str = DEFAULT_LANGUAGE):
    polib = _polib()
    path = catalog_path(source, lang)
    if path.exists():
        catalog = polib.pofile(str(path), wrapwidth=WRAP_WIDTH)
        catalog.wrapwidth = WRAP_WIDTH
        return catalog
    return _new_catalog(source, lang)


def _entry(unit: Unit, msgstr: str = "", flags: list[str] | None = None, previous=None):
    polib = _polib()
    entry = polib.POEntry(
        msgctxt=unit.key,
        msgid=unit.text,
        msgstr=msgstr,
        comment=f"cell {unit.cell} ({unit.kind}{f', line {unit.row}' if unit.row else ''})",
        flags=list(flags or []),
    )
    if previous is not None:
        entry.previous_msgctxt = previous.msgctxt
        entry.previous_msgid = previous.msgid
    return entry


def merge(source: Path, catalog, units: list[Unit]):
    """A catalog for `units`, keeping every translation of `catalog` that still applies.

    Same text (wherever the cell moved): the entry as it was. Changed text under the same key, or a
    similar text elsewhere: the old translation, fuzzy, with the previous English kept. Otherwise:
    untranslated. Old entries that match nothing are kept as obsolete (#~) so a removed cell that
    comes back finds its translation.
    """
    old = [e for e in catalog if e.msgid]  # obsolete entries too: they can be revived
    used: set[int] = set()

    def take(predicate):
        for index, entry in enumerate(old):
            if index not in used and predicate(entry):
                used.add(index)
                return entry
        return None

    merged = _new_catalog(source, catalog.metadata.get("Language", DEFAULT_LANGUAGE))
    merged.metadata.update({k: v for k, v in catalog.metadata.items() if k in merged.metadata})
    chosen: dict[int, Any] = {}
    for number, unit in enumerate(units):  # pass 1: unchanged text (same key first)
        entry = take(
            lambda e, u=unit: not e.obsolete and e.msgid == u.text and e.msgctxt == u.key
        ) or take(lambda e, u=unit: e.msgid == u.text)
        if entry is not None:
            chosen[number] = _entry(unit, entry.msgstr, [f for f in entry.flags if f == "fuzzy"])
            if (
                "fuzzy" in entry.flags
            ):  # still waiting for review: keep the English it was made from
                chosen[number].previous_msgid = entry.previous_msgid
                chosen[number].previous_msgctxt = entry.previous_msgctxt
    for number, unit in enumerate(units):  # pass 2: changed text under the same key
        if number not in chosen:
            entry = take(lambda e, u=unit: e.msgctxt == u.key and e.msgstr and not e.obsolete)
            if entry is not None:
                chosen[number] = _fuzzy(unit, entry)
    for number, unit in enumerate(units):  # pass 3: changed text that moved: the most similar
        if number in chosen:
            continue
        best, best_ratio = None, FUZZY_RATIO
        for index, candidate in enumerate(old):
            if index in used or not candidate.msgstr:
                continue
            ratio = difflib.SequenceMatcher(None, candidate.msgid, unit.text).ratio()
            if ratio >= best_ratio:
                best, best_ratio = index, ratio
        if best is not None:
            used.add(best)
            chosen[number] = _fuzzy(unit, old[best])
        else:
            chosen[number] = _entry(unit)
    for number in range(len(units)):
        merged.append(chosen[number])
    for index, entry in enumerate(old):
        if index not in used and entry.msgstr:
            entry.obsolete = True
            merged.append(entry)
    return merged


def _fuzzy(unit: Unit, entry):
    """A changed cell: its old translation, fuzzy, with the English that translation was made from."""
    previous = _Previous(entry) if entry.previous_msgid else entry
    return _entry(unit, entry.msgstr, ["fuzzy"], previous)


class _Previous:
    """An entry's recorded previous msgid/msgctxt (so `update` twice keeps the first English)."""

    def __init__(self, entry):
        self.msgid = entry.previous_msgid
        self.msgctxt = entry.previous_msgctxt


def catalog_text(catalog) -> str:
    catalog.wrapwidth = WRAP_WIDTH
    return str(catalog) if str(catalog).endswith("\n") else str(catalog) + "\n"


def _read_english(source: Path):
    import jupytext

    return jupytext.read(source)


def updated_catalog(source: Path, lang: str = DEFAULT_LANGUAGE):
    """The catalog `update` would write for this English notebook (nothing is written)."""
    return merge(source, load_catalog(source, lang), extract(_read_english(source)))


def update(lang: str = DEFAULT_LANGUAGE, sources: list[Path] | None = None) -> list[Path]:
    """Rewrite each notebook's catalog from its English source; returns the catalogs that changed."""
    changed = []
    for source in sources or english_sources():
        path = catalog_path(source, lang)
        text = catalog_text(updated_catalog(source, lang))
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


# --------------------------------------------------------------------------------------------------
# Status: what is stale
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stale:
    notebook: str
    unit: Unit
    state: str  # "fuzzy" (English changed since the translation) or "untranslated"
    previous: str | None = None

    def __str__(self) -> str:
        first = self.unit.text.strip().splitlines()[0] if self.unit.text.strip() else ""
        return f"{self.notebook} {self.unit.where()}: {self.state}: {first[:70]!r}"


def translation_for(catalog, unit: Unit) -> str | None:
    """The usable translation of a unit: a translated, non-fuzzy entry with exactly its English."""
    for entry in catalog:
        if (
            not entry.obsolete
            and entry.msgid == unit.text
            and entry.msgstr
            and "fuzzy" not in entry.flags
            and entry.msgctxt == unit.key
        ):
            return entry.msgstr
    for entry in catalog:  # the cell moved and `update` has not run yet: same text is good enough
        if not entry.obsolete and entry.msgid == unit.text and entry.msgstr:
            if "fuzzy" not in entry.flags:
                return entry.msgstr
    return None


def stale(lang: str = DEFAULT_LANGUAGE, sources: list[Path] | None = None) -> list[Stale]:
    """Every unit without a current translation, as `update` would leave the catalogs."""
    found = []
    for source in sources or english_sources():
        catalog = updated_catalog(source, lang)
        units = extract(_read_english(source))
        entries = {(e.msgctxt, e.msgid): e for e in catalog if not e.obsolete}
        for unit in units:
            if not needs_translation(unit.text):
                continue
            entry = entries.get((unit.key, unit.text))
            if entry is None or not entry.msgstr:
                found.append(Stale(source.stem, unit, "untranslated"))
            elif "fuzzy" in entry.flags:
                found.append(Stale(source.stem, unit, "fuzzy", entry.previous_msgid))
    return found


def stale_details(lang: str = DEFAULT_LANGUAGE) -> str:
    """Each stale entry in full: its catalog, key, the English now, the English it was translated
    from and that translation (what a translator needs, in the order `status` lists them)."""
    blocks = []
    for item in stale(lang):
        source = repo_root() / "notebooks" / f"{item.notebook}.py"
        entry = next(
            (
                e
                for e in updated_catalog(source, lang)
                if e.msgctxt == item.unit.key and e.msgid == item.unit.text
            ),
            None,
        )
        lines = [
            f"=== {catalog_path(source, lang).relative_to(repo_root())} {item.unit.where()}: "
            f"{item.state}",
            "--- English now:",
            item.unit.text,
        ]
        if entry is not None and entry.previous_msgid:
            lines += ["--- English the translation was made from:", entry.previous_msgid]
        if entry is not None and entry.msgstr:
            lines += ["--- that translation:", entry.msgstr]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def status(lang: str = DEFAULT_LANGUAGE) -> str:
    """A per-notebook table of translated/fuzzy/untranslated entries, then each stale one."""
    lines = [f"{'notebook':34s} {'entries':>7s} {'done':>5s} {'fuzzy':>5s} {'new':>5s}"]
    problems = stale(lang)
    for source in english_sources():
        units = [u for u in extract(_read_english(source)) if needs_translation(u.text)]
        mine = [p for p in problems if p.notebook == source.stem]
        fuzzy = sum(p.state == "fuzzy" for p in mine)
        lines.append(
            f"{source.stem:34s} {len(units):7d} {len(units) - len(mine):5d} {fuzzy:5d} "
            f"{len(mine) - fuzzy:5d}"
        )
    lines += [""] + [str(p) for p in problems] if problems else ["", "every entry is translated"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Build: catalogs -> translated notebooks
# --------------------------------------------------------------------------------------------------


def _replace_comments(source: str, replacements: dict[tuple[int, int], str]) -> str:
    lines = source.split("\n")
    for (row, col), text in replacements.items():
        lines[row - 1] = lines[row - 1][:col] + "# " + text
    return "\n".join(lines)


def translate_notebook(source: Path, lang: str = DEFAULT_LANGUAGE):
    """The English notebook with its prose from the catalog (English where no translation is current)."""
    notebook = _read_english(source)
    catalog = load_catalog(source, lang)
    comments: dict[int, dict[tuple[int, int], str]] = {}
    for unit in extract(notebook):
        text = translation_for(catalog, unit)
        if text is None:
            continue
        if unit.kind == "markdown":
            notebook.cells[unit.cell].source = text
        else:
            comments.setdefault(unit.cell, {})[(unit.row, unit.col)] = text
    for cell, replacements in comments.items():
        notebook.cells[cell].source = _replace_comments(notebook.cells[cell].source, replacements)
    notebook.metadata["kubecourse_i18n"] = {
        "language": lang,
        "source": f"notebooks/{source.name}",
        "catalog": str(catalog_path(source, lang).relative_to(repo_root())),
        "generated_by": "python -m kubecourse.i18n build (edit the catalog, not this file)",
    }
    notebook.metadata.setdefault("jupytext", {})["notebook_metadata_filter"] = "kubecourse_i18n"
    return notebook


def built_texts(source: Path, lang: str = DEFAULT_LANGUAGE) -> dict[Path, str]:
    """What the build writes for one notebook: {path: text} of the translated .py and .ipynb."""
    import tempfile

    import jupytext

    from .course import sync

    target = translated_path(source, lang)
    py_text = jupytext.writes(translate_notebook(source, lang), fmt="py:percent")
    with tempfile.TemporaryDirectory() as tmp:  # the .ipynb exactly as `course --sync` writes it
        staged = Path(tmp) / source.name
        staged.write_text(py_text, encoding="utf-8")
        (ipynb,) = sync([staged])
        ipynb_text = ipynb.read_text(encoding="utf-8")
    return {target: py_text, target.with_suffix(".ipynb"): ipynb_text}


def build(lang: str = DEFAULT_LANGUAGE, sources: list[Path] | None = None) -> list[Path]:
    """Write notebooks/<lang>/NN_topic.py and .ipynb for every English notebook; returns changed files."""
    written = []
    for source in sources or english_sources():
        for path, text in built_texts(source, lang).items():
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                written.append(path)
    return written


def drift(lang: str = DEFAULT_LANGUAGE) -> list[str]:
    """Translated notebooks that differ from what `build` writes (or are missing, or orphaned)."""
    problems = []
    expected: set[Path] = set()
    for source in english_sources():
        for path, text in built_texts(source, lang).items():
            expected.add(path)
            name = path.relative_to(repo_root())
            if not path.exists():
                problems.append(f"{name} is missing: run `make notebooks`")
            elif path.read_text(encoding="utf-8") != text:
                problems.append(f"{name} differs from what the build writes: run `make notebooks`")
    folder = repo_root() / "notebooks" / lang
    for path in sorted(folder.glob("*.py")) + sorted(folder.glob("*.ipynb")):
        if path not in expected:
            problems.append(f"{path.relative_to(repo_root())} has no English source: delete it")
    return problems


def inline_code(text: str) -> set[str]:
    """The `code spans` of a markdown text (outside fenced blocks)."""
    return set(re.findall(r"`[^`]+`", _FENCE.sub(" ", text)))


def commands(text: str) -> list[str]:
    """A markdown cell's fenced code blocks without their `#` comments (comments may be translated)."""
    return [
        "\n".join(re.sub(r"(^|\s)#.*$", "", line).rstrip() for line in block.splitlines())
        for block in code_blocks(text)
    ]


def code_without_comments(source: str) -> str:
    """A code cell's code with its comments removed (the parameters cell is compared this way)."""
    cut = {(row, col) for row, col, _ in _comments(source)}
    lines = source.split("\n")
    for row, col in cut:
        lines[row - 1] = lines[row - 1][:col].rstrip()
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Translated documents (docs/<lang>/*.md): one English source each, recorded by its git blob hash
# --------------------------------------------------------------------------------------------------

_DOC_HEADER = re.compile(
    r"^<!-- i18n: source=(?P<source>\S+) source-blob=(?P<blob>[0-9a-f]{40}) .*?-->\n"
)


def git_blob(data: bytes) -> str:
    """The id git gives a file's content (`git hash-object FILE`): `git show <id>` prints that text."""
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def doc_header(source: str, blob: str) -> str:
    return (
        f"<!-- i18n: source={source} source-blob={blob} (translated from this version of the English;"
        " when it changes, update the translation and run"
        " `python -m kubecourse.i18n record <this file>`) -->\n"
    )


def translated_docs(lang: str = DEFAULT_LANGUAGE) -> list[Path]:
    return sorted((repo_root() / "docs" / lang).glob("*.md"))


def stale_docs(lang: str = DEFAULT_LANGUAGE) -> list[str]:
    """Translated documents whose English source changed since they were translated (or have no header)."""
    root = repo_root()
    problems = []
    for path in translated_docs(lang):
        name = path.relative_to(root)
        match = _DOC_HEADER.match(path.read_text(encoding="utf-8"))
        if match is None:
            problems.append(f"{name}: no `<!-- i18n: source=... source-blob=... -->` first line")
            continue
        source = root / match["source"]
        if not source.exists():
            problems.append(f"{name}: its source {match['source']} no longer exists")
        elif git_blob(source.read_bytes()) != match["blob"]:
            problems.append(
                f"{name}: {match['source']} changed since the translation; see what changed with "
                f"`diff <(git show {match['blob']}) {match['source']}`, update the translation, then "
                f"`python -m kubecourse.i18n record {name}`"
            )
    return problems


def record(path: Path) -> str:
    """Stamp a translated document with the current blob of its English source (after updating it)."""
    text = path.read_text(encoding="utf-8")
    match = _DOC_HEADER.match(text)
    if match is None:
        raise SystemExit(f"{path}: first line must be an i18n header naming its source")
    blob = git_blob((repo_root() / match["source"]).read_bytes())
    path.write_text(doc_header(match["source"], blob) + text[match.end() :], encoding="utf-8")
    return blob


# --------------------------------------------------------------------------------------------------
# Small strings of the helpers (course summary headings): one catalog, kubecourse.po
# --------------------------------------------------------------------------------------------------


def gettext(message: str, lang: str | None) -> str:
    """`message` in `lang` from helpers/kubecourse/locale/<lang>/LC_MESSAGES/kubecourse.po."""
    if not lang or lang == "en":
        return message
    path = Path(__file__).parent / "locale" / lang / "LC_MESSAGES" / "kubecourse.po"
    if not path.exists():
        return message
    for entry in _polib().pofile(str(path)):
        if entry.msgid == message and entry.msgstr and "fuzzy" not in entry.flags:
            return entry.msgstr
    return message


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m kubecourse.i18n",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["update", "status", "build", "record"])
    parser.add_argument("paths", nargs="*", type=Path, help="record: translated documents")
    parser.add_argument(
        "--full", action="store_true", help="status: print each stale entry's English and old text"
    )
    parser.add_argument("--lang", default=DEFAULT_LANGUAGE, choices=LANGUAGES)
    args = parser.parse_args(argv)
    root = repo_root()
    if args.command == "update":
        for path in update(args.lang):
            print(f"updated {path.relative_to(root)}")
        print(status(args.lang))
    elif args.command == "build":
        for path in build(args.lang):
            print(f"wrote {path.relative_to(root)}")
    elif args.command == "record":
        for path in args.paths:
            print(f"{path}: source-blob {record(path.resolve())}")
    else:
        print(status(args.lang))
        if args.full and stale(args.lang):
            print("\n" + stale_details(args.lang))
        documents = stale_docs(args.lang)
        print("\n".join(["", "documents:"] + (documents or ["every document is current"])))
        if stale(args.lang) or documents:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
