"""Fixtures of the synthetic-data tests: one street scene and one rendered frame, shared."""

from __future__ import annotations

import time

import pytest

from geo3d.synthetic import build_street_scene, nuscenes_like_rig, render_capture

STREET_SEED = 7


@pytest.fixture(scope="session")
def street_scene():
    return build_street_scene(STREET_SEED)


@pytest.fixture(scope="session")
def street_capture(street_scene):
    """One 225x400 six-camera frame + LiDAR of the street, the ego at its start (timed)."""
    start = time.perf_counter()
    capture = render_capture(street_scene, nuscenes_like_rig(), [street_scene.ego2world(0.0)], seed=STREET_SEED)
    capture.metadata["test_render_seconds"] = time.perf_counter() - start
    return capture
