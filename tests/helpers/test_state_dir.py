"""$KUBECOURSE_STATE_DIR moves the local backend's state (runs, logs, PVC folders, rendered
manifests) out of <repo>/.course: how each pytest-xdist worker gets its own (tests/conftest.py)."""

from __future__ import annotations

from kubecourse import TrainingClient
from kubecourse import constants as C
from kubecourse.backends.config import LocalBackendConfig
from kubecourse.backends.local import LocalBackend
from kubecourse.manifests import repo_root


def test_the_env_variable_moves_the_state_and_an_explicit_folder_still_wins(tmp_path, monkeypatch):
    monkeypatch.delenv(C.LOCAL_STATE_DIR_ENV, raising=False)
    assert LocalBackend().state_dir == repo_root() / C.LOCAL_STATE_DIR
    monkeypatch.setenv(C.LOCAL_STATE_DIR_ENV, str(tmp_path / "worker"))
    backend = LocalBackend()
    assert backend.state_dir == tmp_path / "worker"
    assert backend.pvc_dir("datasets", "default").is_relative_to(tmp_path / "worker")
    with TrainingClient(backend=backend, show_kubectl=False) as client:
        assert client.rendered_dir == tmp_path / "worker" / "rendered"
    explicit = LocalBackend(LocalBackendConfig(state_dir=tmp_path / "mine"))
    assert explicit.state_dir == tmp_path / "mine"
