"""The Chinese documents: current with their English sources, commands unchanged, glossary, README.

A translated document (docs/zh_CN/*.md) names its English source and that source's git blob in its
first line; when the English changes the test below fails and says how to see the change and how to
mark the translation current again (`python -m kubecourse.i18n record <file>`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubecourse import i18n

REPO = Path(__file__).resolve().parents[1]
TRANSLATED = {
    "docs/zh_CN/runbook.md": "docs/runbook.md",
    "docs/zh_CN/cost-optimization-guide.md": "docs/cost-optimization-guide.md",
    "docs/zh_CN/design.md": "docs/design.md",
    "docs/zh_CN/cluster-setup.md": "docs/cluster-setup.md",
    "docs/zh_CN/instructor-guide.md": "docs/instructor-guide.md",
}


def test_translated_documents_are_current_with_their_english_source():
    stale = i18n.stale_docs("zh_CN")
    assert not stale, "\n".join(stale)


@pytest.mark.parametrize("translated, source", TRANSLATED.items())
def test_each_document_has_one_translation_with_the_same_commands(translated, source):
    chinese = (REPO / translated).read_text(encoding="utf-8")
    english = (REPO / source).read_text(encoding="utf-8")
    assert chinese.startswith(f"<!-- i18n: source={source} ")
    assert i18n.looks_translated(chinese)
    assert i18n.commands(chinese) == i18n.commands(english), "a command or code block changed"
    headings = [line for line in english.splitlines() if line.startswith("#")]
    assert len([line for line in chinese.splitlines() if line.startswith("#")]) >= len(headings)


def test_a_changed_source_makes_its_translation_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(i18n, "repo_root", lambda: tmp_path)
    (tmp_path / "docs" / "zh_CN").mkdir(parents=True)
    source = tmp_path / "docs" / "guide.md"
    source.write_text("# Guide\nOne sentence.\n")
    translated = tmp_path / "docs" / "zh_CN" / "guide.md"
    translated.write_text(i18n.doc_header("docs/guide.md", "0" * 40) + "# 指南\n一句话。\n")
    assert "changed since the translation" in i18n.stale_docs()[0]
    i18n.record(translated)
    assert i18n.stale_docs() == []
    assert translated.read_text().endswith("# 指南\n一句话。\n"), "recording keeps the text"
    source.write_text("# Guide\nOne sentence, edited.\n")
    (problem,) = i18n.stale_docs()
    assert "docs/zh_CN/guide.md: docs/guide.md changed" in problem
    assert "git show " in problem and "kubecourse.i18n record docs/zh_CN/guide.md" in problem


def test_git_blob_matches_git_hash_object():
    # `printf 'hello\n' | git hash-object --stdin`
    assert i18n.git_blob(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


# --------------------------------------------------------------------------------------------------
# Glossary
# --------------------------------------------------------------------------------------------------


def _glossary_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in (REPO / "docs" / "glossary.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r'^\| <a id="([^"]+)"></a>([^|]+)\|([^|]+)\|([^|]+)\|$', line)
        if match:
            rows.append(tuple(part.strip() for part in match.groups()))
    return rows


def test_glossary_has_at_least_100_terms_grouped_by_module():
    text = (REPO / "docs" / "glossary.md").read_text(encoding="utf-8")
    rows = _glossary_rows()
    assert len(rows) >= 100
    anchors = [row[0] for row in rows]
    assert len(anchors) == len(set(anchors)), "duplicate anchors"
    assert len(re.findall(r"^## Module \d", text, re.MULTILINE)) == 5
    for anchor, english, chinese, meaning in rows:
        assert english and chinese and meaning, anchor
        assert i18n.looks_translated(meaning), f"{anchor}: the meaning is in Chinese"


# --------------------------------------------------------------------------------------------------
# README.zh-CN.md: linked both ways, the same course map and the same two commands
# --------------------------------------------------------------------------------------------------


def _course_map(text: str) -> list[tuple[str, str]]:
    """(lesson number, notebook path) of each course-map row.

    The English map is generated (`kubecourse.coursemap --readme`: `| 00 [title](notebooks/...) |`);
    the Chinese one names the notebook in its own column (a `notebooks/zh_CN/...` cell).
    """
    return re.findall(r"^\| (\d\d)\b[^|\]]*(?:\]\(|\| `)(notebooks/[^`)]+)[`)]", text, re.MULTILINE)


def test_chinese_readme_has_the_same_course_map_and_commands():
    english = (REPO / "README.md").read_text(encoding="utf-8")
    chinese = (REPO / "README.zh-CN.md").read_text(encoding="utf-8")
    assert "README.zh-CN.md" in english.split("\n## ")[0], "README.md links the Chinese one on top"
    assert "README.md" in chinese.split("\n## ")[0], "and back"
    english_map = _course_map(english)
    assert len(english_map) >= 12
    assert [lesson for lesson, _ in _course_map(chinese)] == [lesson for lesson, _ in english_map]
    for _, notebook in english_map:
        assert notebook.replace("notebooks/", "notebooks/zh_CN/") in chinese
    for command in ("make course", "make test"):
        assert re.search(rf"^{command}\b", chinese, re.MULTILINE), command
    assert "make course LANG=zh_CN" in chinese
    for variable in ("HF_ENDPOINT", "PIP_INDEX_URL", "REGISTRY_PREFIX"):
        assert variable in chinese, f"mirror setting {variable} is documented"
