"""FeatureCache: hits and misses, identity keying, corrupt / truncated entries recomputed, float16 round trip."""

from __future__ import annotations

import json

import pytest
import torch

from geo3d.language.cache import FeatureCache
from geo3d.language.teachers import DenseFeatures, DenseTeacher, TeacherError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RandomTeacher(DenseTeacher):
    """Features drawn from a seeded generator per call (each compute call is counted)."""

    def __init__(self, seed: int = 0, dim: int = 8) -> None:
        self.seed, self._dim, self.calls = seed, dim, 0

    dim = property(lambda self: self._dim)
    space = property(lambda self: "test-space")
    identity = property(lambda self: f"random(seed={self.seed}, dim={self._dim})")

    def _check_inputs(self, images):
        return torch.as_tensor(images)

    def _grid(self, height, width):
        return (height // 4, width // 4), (4.0, 4.0)

    def _compute(self, batch):
        self.calls += 1
        gen = torch.Generator().manual_seed(self.seed + int(batch.sum()))
        shape = (batch.shape[0], batch.shape[1] // 4, batch.shape[2] // 4, self._dim)
        return torch.nn.functional.normalize(torch.randn(shape, generator=gen), dim=-1)


def image(index: int) -> torch.Tensor:
    return torch.full((1, 12, 16), float(index))


def test_hits_misses_and_round_trip(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    teacher = RandomTeacher()
    fresh = teacher(image(1))
    first = cache.get_or_compute("scene-1", 3, "CAM_FRONT", teacher, lambda: teacher(image(1)))
    again = cache.get_or_compute("scene-1", 3, "CAM_FRONT", teacher, lambda: teacher(image(1)))
    assert (cache.hits, cache.misses, cache.invalid, teacher.calls) == (1, 1, 0, 2)
    torch.testing.assert_close(first.features, again.features, rtol=0, atol=0)  # a miss returns what a hit reads
    assert first.features.shape == (1, 3, 4, 8) and first.stride == (4.0, 4.0) and again.image_size == (12, 16)
    torch.testing.assert_close(again.features, fresh.features, rtol=0, atol=2e-3)  # float16 rounding
    assert torch.allclose(again.features.norm(dim=-1), torch.ones(1, 3, 4), atol=1e-6)
    # another frame, camera or capture is another entry
    cache.get_or_compute("scene-1", 4, "CAM_FRONT", teacher, lambda: teacher(image(2)))
    cache.get_or_compute("scene-1", 3, "CAM_BACK", teacher, lambda: teacher(image(3)))
    cache.get_or_compute("scene-2", 3, "CAM_FRONT", teacher, lambda: teacher(image(4)))
    assert (cache.hits, cache.misses) == (1, 4)
    # a new cache object on the same folder reads everything back
    reread = FeatureCache(tmp_path / "cache")
    out = reread.get_or_compute("scene-1", 3, "CAM_FRONT", teacher, lambda: pytest.fail("should be cached"))
    torch.testing.assert_close(out.features, first.features, rtol=0, atol=0)
    manifest = json.loads((cache.teacher_dir(teacher) / "manifest.json").read_text())
    assert manifest["identity"] == teacher.identity and manifest["dim"] == 8


def test_identity_keys_entries(tmp_path):
    cache = FeatureCache(tmp_path)
    a, b = RandomTeacher(seed=0), RandomTeacher(seed=1)
    fa = cache.get_or_compute("s", 0, "CAM", a, lambda: a(image(1)))
    fb = cache.get_or_compute("s", 0, "CAM", b, lambda: b(image(1)))
    assert cache.misses == 2 and cache.teacher_dir(a) != cache.teacher_dir(b)
    assert not torch.allclose(fa.features, fb.features)
    assert cache.get_or_compute("s", 0, "CAM", a, lambda: pytest.fail("cached")).features.equal(fa.features)


def test_truncated_and_corrupt_entries_are_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    teacher = RandomTeacher()
    expected = cache.get_or_compute("s", 0, "CAM", teacher, lambda: teacher(image(1))).features
    path = cache.entry_path("s", 0, "CAM", teacher)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(UserWarning, match="unusable"):
        out = cache.get_or_compute("s", 0, "CAM", teacher, lambda: teacher(image(1)))
    torch.testing.assert_close(out.features, expected, rtol=0, atol=0)
    assert (cache.misses, cache.invalid) == (2, 1)
    assert cache.get_or_compute("s", 0, "CAM", teacher, lambda: pytest.fail("rewritten")).features.equal(expected)
    path.with_suffix(".json").write_text("{not json")  # corrupt sidecar
    with pytest.warns(UserWarning, match="unusable"):
        cache.get_or_compute("s", 0, "CAM", teacher, lambda: teacher(image(1)))
    path.with_suffix(".json").unlink()  # interrupted write: features without their sidecar
    with pytest.warns(UserWarning, match="unusable"):
        cache.get_or_compute("s", 0, "CAM", teacher, lambda: teacher(image(1)))
    flipped = bytearray(path.read_bytes())
    flipped[-1] ^= 0xFF  # same length, other content: the checksum catches it
    path.write_bytes(bytes(flipped))
    with pytest.warns(UserWarning, match="checksum"):
        cache.get_or_compute("s", 0, "CAM", teacher, lambda: teacher(image(1)))
    assert cache.invalid == 4


def test_manifest_of_another_identity_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    teacher = RandomTeacher()
    cache.get_or_compute("s", 0, "CAM", teacher, lambda: teacher(image(1)))
    manifest = cache.teacher_dir(teacher) / "manifest.json"
    manifest.write_text(json.dumps({"identity": "something else", "format": 1}))
    fresh = FeatureCache(tmp_path)
    with pytest.warns(UserWarning, match="manifest"):
        fresh.get_or_compute("s", 0, "CAM", teacher, lambda: teacher(image(1)))
    assert fresh.misses == 1 and json.loads(manifest.read_text())["identity"] == teacher.identity
    fresh.get_or_compute("s", 0, "CAM", teacher, lambda: pytest.fail("cached"))
    assert fresh.hits == 1


def test_unsafe_names_do_not_collide(tmp_path):
    cache = FeatureCache(tmp_path)
    teacher = RandomTeacher()
    p1 = cache.entry_path("nuscenes/scene-0001", 0, "CAM", teacher)
    p2 = cache.entry_path("nuscenes_scene-0001", 0, "CAM", teacher)
    p3 = cache.entry_path("../x", 0, "CAM", teacher)
    assert len({p1, p2, p3}) == 3
    assert all(p.is_relative_to(cache.teacher_dir(teacher)) for p in (p1, p2, p3))


def test_errors(tmp_path):
    cache = FeatureCache(tmp_path)
    teacher = RandomTeacher()
    for args, match in [
        (("", 0, "CAM"), "capture_id"),
        (("s", -1, "CAM"), "frame_index"),
        (("s", 1.5, "CAM"), "frame_index"),
        (("s", 0, ""), "camera_name"),
    ]:
        with pytest.raises(TeacherError, match=match):
            cache.get_or_compute(*args, teacher, lambda: teacher(image(1)))
    with pytest.raises(TeacherError, match="DenseFeatures"):
        cache.get_or_compute("s", 0, "CAM", teacher, lambda: torch.zeros(1, 3, 4, 8))
    with pytest.raises(TeacherError, match="one camera"):
        cache.get_or_compute("s", 0, "CAM", teacher, lambda: teacher(torch.cat([image(1), image(2)])))
    bad = DenseFeatures(torch.full((1, 3, 4, 8), float("nan")), (4.0, 4.0), (12, 16))
    with pytest.raises(TeacherError, match="NaN"):
        cache.get_or_compute("s", 0, "CAM", teacher, lambda: bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TeacherError, match="not a folder"):
        FeatureCache(tmp_path / "file")
    assert cache.misses == 3  # the compute errors happened after the lookup
