"""Every manifest in manifests/ is valid, policy-clean, teaches from its first line, and is listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubecourse import validate
from kubecourse.coursemap import manifest_set_lessons
from kubecourse.manifests import parse_yaml
from tests.conftest import CRD_DIR

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
# Lessons may split into subfolders (04-production/admin, .../jobs): search every level.
FILES = sorted(p for p in MANIFESTS.glob("*/**/*.yaml"))
OBJECT_FILES = [p for p in FILES if p.name != "kustomization.yaml"]


def test_there_are_manifests():
    assert OBJECT_FILES


@pytest.mark.parametrize("path", OBJECT_FILES, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_manifest_validates_and_passes_policy(path):
    # Custom resources are checked against ../shared/crds when it is there (else skipped with a
    # reason in report.skipped); built-in kinds are always checked.
    report = validate(parse_yaml(path.read_text(), str(path)), crd_dir=CRD_DIR)
    assert report.ok, str(report)
    print("\n".join(report.skipped))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_manifest_opens_with_a_teaching_header(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    manifest_set = path.relative_to(MANIFESTS).parts[0][:2]
    lessons = manifest_set_lessons(manifest_set)
    word = "Lesson" if len(lessons) == 2 else "Lessons"
    assert header and header[0].startswith(f"# {word} {lessons}, manifest set {manifest_set}"), (
        f"{path.name}: first line should name the lessons (notebook numbers) and the manifest set"
    )
    for word in ("Apply:", "Check:", "Logs:", "Clean:"):
        assert word in text, f"{path.name}: teaching header lacks {word!r}"


@pytest.mark.parametrize(
    "folder", sorted({p.parent for p in FILES}), ids=lambda p: str(p.relative_to(MANIFESTS))
)
def test_kustomization_lists_every_file_and_folder_has_a_readme(folder):
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    present = {p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present
    readme = (folder / "README.md").read_text()
    assert all(name in readme for name in present), (
        "the folder README table should describe every file"
    )


def test_no_latest_or_templating_anywhere():
    for path in FILES:
        text = path.read_text()
        assert ":latest" not in text and "{{" not in text and "${" not in text, path
