"""One course map: the README, notebook 00 and the manifests agree with kubecourse.coursemap."""

from __future__ import annotations

import re
from pathlib import Path

from kubecourse.coursemap import LESSONS, MANIFEST_SETS, PARTS, readme_block, readme_course_map

REPO = Path(__file__).resolve().parents[2]


def test_lessons_are_the_notebooks():
    notebooks = sorted(p.name[:2] for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    assert [lesson.number for lesson in LESSONS] == notebooks


def test_every_lesson_is_in_one_of_the_five_parts_in_order():
    keys = [key for key, _, _ in PARTS]
    assert len(keys) == 5
    order = [keys.index(lesson.part) for lesson in LESSONS]
    assert order == sorted(order) and set(order) == set(range(5))


def test_the_readme_course_map_is_generated_from_the_course_map():
    assert readme_block((REPO / "README.md").read_text()) == readme_course_map(), (
        "run `python -m kubecourse.coursemap --readme`"
    )


def test_notebook_times_match_the_course_map():
    for lesson in LESSONS:
        source = next((REPO / "notebooks").glob(f"{lesson.number}_*.py")).read_text()
        stated = re.search(r"\*\*Time:\*\* (\d+) minutes", source)
        assert stated and int(stated.group(1)) == lesson.minutes, lesson.number


def test_manifest_sets_name_their_lessons():
    for number, (folder, lessons) in MANIFEST_SETS.items():
        assert folder.startswith(number) and (REPO / "manifests" / folder).is_dir()
        readme = (REPO / "manifests" / folder / "README.md").read_text().splitlines()[0]
        assert readme.startswith(f"# Manifest set {number} (lessons "), readme
        assert all(lesson in {x.number for x in LESSONS} for lesson in lessons)


def test_the_instructor_guide_covers_every_lesson_and_exercise():
    from kubecourse.exercises import LESSON_EXERCISES

    guide = (REPO / "docs" / "instructor-guide.md").read_text()
    for lesson in LESSONS:
        assert re.search(rf"^\| {lesson.number} \w", guide, flags=re.M), lesson.number
        assert re.search(rf"^\| {lesson.number} \| ", guide, flags=re.M), (
            f"exercise row {lesson.number}"
        )
    assert {e.lesson for e in LESSON_EXERCISES.values()} == {lesson.number for lesson in LESSONS}
    for _, zh, _ in PARTS:
        assert zh in guide
