"""The Chinese notebooks (notebooks/zh_CN/) are current, complete, built from the catalogs, and run.

When one of these fails after an English edit, run

    python -m kubecourse.i18n update && python -m kubecourse.i18n status

translate each entry it lists in notebooks/locale/zh_CN/LC_MESSAGES/NN_topic.po (delete the
`#, fuzzy` line), then `make notebooks` (or `python -m kubecourse.i18n build`) and commit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import pytest

from kubecourse import i18n
from kubecourse.course import execute
from tests.guards import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[2]
LANG = "zh_CN"
OUT = REPO / "build" / "test-notebooks" / LANG
SOURCES = i18n.english_sources()
HOW_TO_FIX = "run `python -m kubecourse.i18n update`, translate, then `make notebooks`"


def test_every_english_notebook_has_a_catalog_and_a_chinese_notebook():
    assert SOURCES, "no English notebooks found"
    for source in SOURCES:
        assert i18n.catalog_path(source, LANG).exists(), f"{source.name}: no catalog ({HOW_TO_FIX})"
        assert i18n.translated_path(source, LANG).exists(), f"{source.name}: no Chinese notebook"


def test_no_stale_or_missing_translation():
    stale = i18n.stale(LANG)
    assert not stale, f"{len(stale)} cell(s) without a current translation ({HOW_TO_FIX}):\n" + (
        "\n".join(str(s) for s in stale)
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_catalog_is_up_to_date_with_the_english_source(source):
    expected = i18n.catalog_text(i18n.updated_catalog(source, LANG))
    assert i18n.catalog_path(source, LANG).read_text(encoding="utf-8") == expected, (
        f"{i18n.catalog_path(source, LANG).name} is behind {source.name}: {HOW_TO_FIX}"
    )


def test_chinese_notebooks_are_what_the_build_writes():
    assert i18n.drift(LANG) == []


def _pairs(source: Path):
    english = jupytext.read(source)
    chinese = jupytext.read(i18n.translated_path(source, LANG))
    assert [c.cell_type for c in english.cells] == [c.cell_type for c in chinese.cells]
    return list(zip(english.cells, chinese.cells, strict=True))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_code_cells_are_identical_to_the_english_ones(source):
    for number, (en, zh) in enumerate(_pairs(source)):
        if en.cell_type != "code":
            continue
        if "parameters" in en.metadata.get("tags", []):  # only its comments are translated
            assert i18n.code_without_comments(zh.source) == i18n.code_without_comments(en.source), (
                f"{source.stem} cell {number} (parameters): code differs from the English"
            )
            assert zh.metadata == en.metadata
        else:
            assert zh.source == en.source, f"{source.stem} cell {number}: differs from the English"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_no_prose_left_in_english(source):
    untranslated = []
    for number, (en, zh) in enumerate(_pairs(source)):
        if en.cell_type == "markdown":
            pieces = [(en.source, zh.source)]
        elif "parameters" in en.metadata.get("tags", []):
            pieces = list(
                zip(
                    [c[2] for c in i18n._comments(en.source)],
                    [c[2] for c in i18n._comments(zh.source)],
                    strict=True,
                )
            )
        else:
            continue
        for english, chinese in pieces:
            if i18n.needs_translation(english) and not i18n.looks_translated(chinese):
                untranslated.append(f"{source.stem} cell {number}: {english.splitlines()[0]!r}")
    assert not untranslated, "left in English:\n" + "\n".join(untranslated)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_commands_and_code_in_prose_stay_as_they_are(source):
    for number, (en, zh) in enumerate(_pairs(source)):
        if en.cell_type != "markdown":
            continue
        assert i18n.commands(zh.source) == i18n.commands(en.source), (
            f"{source.stem} cell {number}: a fenced command or code block changed"
        )
        invented = i18n.inline_code(zh.source) - i18n.inline_code(en.source)
        assert not invented, f"{source.stem} cell {number}: code not in the English: {invented}"
        if zh.source != en.source:  # a translated cell keeps every `code span` of the English
            dropped = i18n.inline_code(en.source) - i18n.inline_code(zh.source)
            assert not dropped, f"{source.stem} cell {number}: code left out: {dropped}"


def _glossary_anchors() -> set[str]:
    return set(re.findall(r'<a id="([^"]+)"></a>', (REPO / "docs" / "glossary.md").read_text()))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_links_resolve_and_the_glossary_is_linked(source):
    chinese = i18n.translated_path(source, LANG)
    text = chinese.read_text(encoding="utf-8")
    links = re.findall(r"\]\((\.\./[^)#\s]+)(?:#([^)\s]+))?\)", text)
    assert any(target.endswith("docs/glossary.md") for target, _ in links), (
        f"{chinese.name}: link the first glossary term to ../../docs/glossary.md#<term>"
    )
    anchors = _glossary_anchors()
    for target, anchor in links:
        assert (chinese.parent / target).resolve().exists(), f"{chinese.name}: broken link {target}"
        if target.endswith("glossary.md") and anchor:
            assert anchor in anchors, f"{chinese.name}: glossary has no term #{anchor}"


@pytest.mark.notebook
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "name, parameters",
    [
        ("00_setup", {"SMOKE": True}),  # end to end, defaults
        ("08_production", {"SMOKE": True, "LEARNERS": 2}),  # non-default parameters
    ],
    ids=["00-defaults", "08-two-learners"],
)
def test_chinese_notebook_executes(name, parameters):
    notebook = REPO / "notebooks" / LANG / f"{name}.ipynb"
    executed = execute(notebook, OUT, parameters=parameters, cell_timeout_s=int(HANG_GUARD_S))
    outcome = json.loads((OUT / "outcomes" / f"{name}.json").read_text())
    assert outcome["numbers"], f"{notebook.name} recorded no outcome"
    cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    assert i18n.looks_translated("".join(cells[0]["source"])), (
        "the executed copy is the Chinese one"
    )
    injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    for key, value in parameters.items():
        assert f"{key} = {value!r}" in "".join(injected[0]["source"])
