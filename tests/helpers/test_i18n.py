"""The translation mechanism on a small notebook in a scratch repository.

What a contributor relies on: an English edit makes exactly the changed entries stale (fuzzy when a
translation existed, untranslated when the cell is new), each named by cell; unchanged or moved cells
keep their translation; the build copies code byte for byte and writes what `drift` expects.
"""

from __future__ import annotations

import pytest

from kubecourse import i18n

ENGLISH = """# %% [markdown]
# # 99 · Demo: a tiny lesson
#
# **What you will do:** train nothing at all.

# %% tags=["parameters"]
SMOKE = True  # small sizes everywhere
BACKEND = (
    "local"  # "local" or "kubernetes"
)
# a full-line comment about STEPS
STEPS = 20

# %% [markdown]
# ## Run it
# Start the job with `client.submit(spec)`:
#
# ```bash
# kubectl apply -f job.yaml   # create the Job
# ```

# %%
print(SMOKE, BACKEND, STEPS)  # code comments stay English

# %% [markdown]
# ## Clean up
# Delete what you created.
"""

CHINESE = {
    "md/demo-a-tiny-lesson": "# 99 · 演示：一个很小的课程\n\n**你将做什么：** 什么也不训练。",
    "parameters/SMOKE": "处处使用小规模",
    "parameters/BACKEND": '"local" 或 "kubernetes"',
    "parameters/BACKEND#2": "关于 STEPS 的整行注释",
    "md/run-it": (
        "## 运行\n用 `client.submit(spec)` 启动作业：\n\n"
        "```bash\nkubectl apply -f job.yaml   # 创建 Job\n```"
    ),
    "md/clean-up": "## 清理\n删除你创建的对象。",
}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A scratch course repository with one English notebook."""
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setattr(i18n, "repo_root", lambda: tmp_path)
    source = tmp_path / "notebooks" / "99_demo.py"
    source.write_text(ENGLISH)
    return source


def _translate_all(source):
    catalog = i18n.load_catalog(source)
    for entry in catalog:
        entry.msgstr = CHINESE.get(entry.msgctxt, entry.msgstr)
        if "fuzzy" in entry.flags:
            entry.flags.remove("fuzzy")
    i18n.catalog_path(source).write_text(i18n.catalog_text(catalog), encoding="utf-8")


def test_extract_one_entry_per_markdown_cell_and_per_parameter_comment(repo):
    units = i18n.extract(i18n._read_english(repo))
    assert [(u.key, u.kind) for u in units] == [
        ("md/demo-a-tiny-lesson", "markdown"),
        ("parameters/SMOKE", "comment"),
        ("parameters/BACKEND", "comment"),  # the comment inside the parenthesised value
        ("parameters/BACKEND#2", "comment"),  # a full-line comment belongs to the statement above
        ("md/run-it", "markdown"),
        ("md/clean-up", "markdown"),
    ]
    assert units[1].text == "small sizes everywhere"


def test_new_notebook_is_untranslated_then_translated_then_built(repo):
    i18n.update()
    assert {s.state for s in i18n.stale()} == {"untranslated"}
    assert len(i18n.stale()) == 6
    _translate_all(repo)
    assert i18n.stale() == []
    assert i18n.drift() == [
        "notebooks/zh_CN/99_demo.py is missing: run `make notebooks`",
        "notebooks/zh_CN/99_demo.ipynb is missing: run `make notebooks`",
    ]
    i18n.build()
    assert i18n.drift() == []
    built = (repo.parent / "zh_CN" / "99_demo.py").read_text()
    assert "**你将做什么：** 什么也不训练。" in built
    assert "SMOKE = True  # 处处使用小规模" in built
    assert '    "local"  # "local" 或 "kubernetes"' in built
    assert "# 关于 STEPS 的整行注释" in built
    assert "print(SMOKE, BACKEND, STEPS)  # code comments stay English" in built


def test_code_cells_are_byte_identical_and_parameters_differ_only_in_comments(repo):
    i18n.update()
    _translate_all(repo)
    english = i18n._read_english(repo)
    chinese = i18n.translate_notebook(repo)
    assert len(english.cells) == len(chinese.cells)
    for en, zh in zip(english.cells, chinese.cells, strict=True):
        assert en.cell_type == zh.cell_type
        if en.cell_type == "code" and "parameters" not in en.metadata.get("tags", []):
            assert en.source == zh.source
        elif en.cell_type == "code":
            assert en.source != zh.source
            assert i18n.code_without_comments(en.source) == i18n.code_without_comments(zh.source)


def test_an_english_edit_makes_exactly_the_changed_entries_stale(repo):
    i18n.update()
    _translate_all(repo)
    i18n.build()
    edited = (
        ENGLISH.replace("Delete what you created.", "Delete everything you created.")
        .replace("small sizes everywhere", "small sizes everywhere, CPU only")
        .replace("# %%\nprint(", "# %% [markdown]\n# A new cell about printing.\n\n# %%\nprint(")
    )
    repo.write_text(edited)
    problems = {(s.unit.key, s.state) for s in i18n.stale()}
    assert problems == {
        ("md/clean-up", "fuzzy"),
        ("parameters/SMOKE", "fuzzy"),
        ("md/run-it/1", "untranslated"),
    }
    text = "\n".join(str(s) for s in i18n.stale())
    assert "99_demo cell 5 [md/clean-up]: fuzzy" in text  # names the cell
    assert i18n.drift(), "the built notebook no longer matches: the build must be rerun"
    i18n.update()
    catalog = i18n.load_catalog(repo)
    clean = next(e for e in catalog if e.msgctxt == "md/clean-up")
    assert "fuzzy" in clean.flags and clean.msgstr == CHINESE["md/clean-up"]
    assert clean.previous_msgid.endswith("Delete what you created.")
    i18n.build()
    built = (repo.parent / "zh_CN" / "99_demo.py").read_text()
    assert "# Delete everything you created." in built, "a fuzzy entry is not used: English shows"
    assert "# ## 运行" in built, "unchanged cells keep their translation"
    assert {(s.unit.key, s.state) for s in i18n.stale()} == problems, "update keeps them stale"
    i18n.update()
    again = next(e for e in i18n.load_catalog(repo) if e.msgctxt == "md/clean-up")
    assert again.previous_msgid == clean.previous_msgid, "a second update keeps the old English"


def test_moved_cell_keeps_its_translation(repo):
    i18n.update()
    _translate_all(repo)
    run_cell = "# %% [markdown]\n# ## Clean up\n# Delete what you created.\n"
    moved = ENGLISH.replace(run_cell, "")
    moved = moved.replace(
        "# %% [markdown]\n# ## Run it", run_cell + "\n# %% [markdown]\n# ## Run it"
    )
    repo.write_text(moved)
    assert i18n.stale() == []
    i18n.update()
    assert i18n.stale() == []
    i18n.build()
    assert "## 清理" in (repo.parent / "zh_CN" / "99_demo.py").read_text()


def test_removed_cell_becomes_obsolete_and_comes_back(repo):
    i18n.update()
    _translate_all(repo)
    removed = ENGLISH.replace("# %% [markdown]\n# ## Clean up\n# Delete what you created.\n", "")
    repo.write_text(removed)
    i18n.update()
    assert "#~ msgid" in i18n.catalog_path(repo).read_text()
    repo.write_text(ENGLISH)
    i18n.update()
    assert i18n.stale() == []


@pytest.mark.parametrize(
    "text, prose, translated",
    [
        ("## Clean up", True, False),
        ("```bash\nkubectl get pods\n```", False, False),
        ("`client.submit(spec)` starts the job", True, False),
        ("`client.submit(spec)` 启动作业", False, True),
        ("| 00 | `setup` | 5 |", False, False),
        ("see [the guide](https://example.com/abc)", True, False),
    ],
)
def test_prose_detection(text, prose, translated):
    assert i18n.needs_translation(text) is prose
    assert i18n.looks_translated(text) is translated


def test_code_blocks_compare_without_comments():
    english = "```bash\nkubectl apply -f job.yaml   # create the Job\n```"
    chinese = "```bash\nkubectl apply -f job.yaml   # 创建 Job\n```"
    assert i18n.code_blocks(english) != i18n.code_blocks(chinese)
    assert i18n.commands(english) == i18n.commands(chinese)
    assert i18n.commands(english) != i18n.commands(chinese.replace("-f", "-k"))


def test_gettext_reads_the_helpers_catalog():
    assert i18n.gettext("passed", "zh_CN") == "通过"
    assert i18n.gettext("passed", None) == "passed"
    assert i18n.gettext("no such message", "zh_CN") == "no such message"


def test_course_summary_headings_follow_the_language(tmp_path):
    from kubecourse.course import run_course

    (tmp_path / "zh").mkdir()
    (tmp_path / "en").mkdir()
    chinese = run_course(tmp_path / "zh", only="^no-notebook$", lang="zh_CN").read_text()
    english = run_course(tmp_path / "en", only="^no-notebook$").read_text()
    assert chinese.startswith("# 课程运行结果（本地后端）") and "| 笔记本 |" in chinese
    assert english.startswith("# Course run (local backend)")
    assert chinese.encode("utf-8") == (tmp_path / "zh" / "summary.md").read_bytes()


def test_status_full_shows_what_a_translator_needs(repo):
    i18n.update()
    _translate_all(repo)
    repo.write_text(ENGLISH.replace("Delete what you created.", "Delete all you created."))
    details = i18n.stale_details()
    assert "notebooks/locale/zh_CN/LC_MESSAGES/99_demo.po cell 4 [md/clean-up]: fuzzy" in details
    assert "--- English now:\n## Clean up\nDelete all you created." in details
    assert "--- English the translation was made from:\n## Clean up\nDelete what you created." in (
        details
    )
    assert "--- that translation:\n" + CHINESE["md/clean-up"] in details
    assert "every entry is translated" not in i18n.status()
