"""Every reader's shared sample survives read -> write (geo3d format) -> read exactly."""

import pytest

from capture_factory import assert_same_capture
from conftest import shared_path
from geo3d.io import read_capture, write_capture


@pytest.mark.parametrize(
    "parts, options, expected_format",
    [
        (("lego_200",), {"split": "test"}, "blender"),
        (("nuscenes_sample", "n015-2018-07-24-11-22-45+0800.pkl"), {}, "nuscenes-info"),
        (("nuscenes_sample", "n015-2018-07-24-11-22-45+0800.pkl"), {"world": "ego"}, "nuscenes-info"),
        (("rgbd_7scenes",), {}, "7scenes"),
    ],
)
def test_shared_sample_round_trip_is_exact(tmp_path, parts, options, expected_format):
    capture = read_capture(shared_path(*parts), **options)
    assert capture.source_format == expected_format
    if len(capture.frames) > 6:  # keep the test quick: a few frames carry every field
        capture.frames = capture.frames[:6]
    write_capture(capture, tmp_path / "cap")
    again = read_capture(tmp_path / "cap")
    assert_same_capture(capture, again)
