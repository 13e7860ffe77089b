"""Shared fixtures: the sample data in ../shared/data (tests skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GEO3D_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test when it does not exist."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared sample data not found: {path}")
    return path


@pytest.fixture
def lego_dir() -> Path:
    return shared_path("lego_200")


@pytest.fixture
def nuscenes_dir() -> Path:
    return shared_path("nuscenes_sample")


@pytest.fixture
def rgbd_dir() -> Path:
    return shared_path("rgbd_7scenes")


@pytest.fixture
def meshes_dir() -> Path:
    return shared_path("meshes")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with one torch thread (restored after): tiny models are as fast on one,
    and spinning OpenMP threads stall badly when another job shares the CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)
