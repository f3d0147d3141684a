"""Project-wide pytest fixtures: offline, single-threaded, deterministic."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Two pytest-xdist workers share two cores: keep torch from oversubscribing them.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / 'shared'


def shared_path(*parts: str) -> Path:
    """Return a path under ``../shared``, skipping (or failing under CI) if absent.

    Tests that need the read-only ``../shared`` folder call this. In a user's fresh
    clone it is absent and the test is skipped with a clear reason; when the ``CI``
    environment variable is set the test fails instead, so CI never skips silently.
    """
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f'{path} is absent: these tests need ../shared beside the clone'
        if os.environ.get('CI'):
            pytest.fail(message + ' (CI is set, so this is an error, not a skip)')
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _offline_torch_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Point torch.hub at a temporary folder so no test touches the user's cache."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    monkeypatch.setenv('MPLBACKEND', 'agg')
    yield
    torch.hub.set_dir(old)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
