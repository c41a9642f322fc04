"""GPU_CLUSTER_BACKEND picks the cluster adapter; the rest of the system sees the port only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.cluster import RayJobsCluster, RestTrainingCluster
from shared.errors import ConfigurationError
from shared.services import cluster as cluster_service


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GPU_CLUSTER_API_URL", "http://127.0.0.1:8265")
    monkeypatch.setenv("GPU_CLUSTER_API_KEY", "key")
    cluster_service.cluster_settings.cache_clear()
    yield
    cluster_service.cluster_settings.cache_clear()


def test_rest_is_the_default() -> None:
    """Without GPU_CLUSTER_BACKEND the REST adapter is used, as before the Ray backend."""
    assert isinstance(cluster_service.cluster(), RestTrainingCluster)


def test_ray_backend_takes_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU_CLUSTER_BACKEND=ray gives the Ray adapter, with the trainer command and tail length."""
    monkeypatch.setenv("GPU_CLUSTER_BACKEND", "ray")
    monkeypatch.setenv("RAY_TRAINER_ENTRYPOINT", "/opt/venv/bin/python -m trainer")
    monkeypatch.setenv("RAY_LOG_TAIL_LINES", "500")
    adapter = cluster_service.cluster()
    assert isinstance(adapter, RayJobsCluster)
    assert adapter._entrypoint == "/opt/venv/bin/python -m trainer"
    assert adapter._tail_lines == 500


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GPU_CLUSTER_BACKEND", "slurm"),
        ("RAY_TRAINER_ENTRYPOINT", "  "),
        ("RAY_LOG_TAIL_LINES", "5"),
    ],
)
def test_bad_settings_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A backend that does not exist, an empty trainer command or a tiny tail stops the start."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        cluster_service.cluster()
