"""labs/common/provenance.py: what result.json says about where a number came from."""

from __future__ import annotations

import pytest
import torch

from labs.common import provenance as prov


@pytest.mark.parametrize(
    "env, key, expected",
    [
        ({"GIT_SHA": "abc123"}, "git_sha", "abc123"),
        ({"IMAGE_DIGEST": "sha256:ff"}, "image_digest", "sha256:ff"),
        ({"IMAGE_DIGEST": ""}, "image_digest", None),
        ({"COURSE_VERSION": "9.9"}, "course_version", "9.9"),
    ],
)
def test_values_from_the_environment(env, key, expected):
    assert prov.provenance(torch.device("cpu"), seed=1, env=env)[key] == expected


def test_versions_device_and_seed():
    p = prov.provenance(torch.device("cpu"), seed=7, env={})
    assert p["seed"] == 7 and p["device"] == {"type": "cpu"}
    assert p["packages"]["torch"] == torch.__version__
    assert set(p) == {
        "course_version", "git_sha", "python", "packages", "device", "seed", "image_digest"
    }  # fmt: skip


def test_git_sha_is_none_outside_a_checkout(tmp_path):
    assert prov.git_sha(tmp_path, env={}) is None


def test_a_missing_package_is_none_not_an_error():
    assert prov.package_versions(("no-such-package-kc",)) == {"no-such-package-kc": None}
