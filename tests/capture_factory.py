"""Builders of random captures for tests (every field set, several dtypes), and an exact comparison."""

import numpy as np

from geo3d.structures import ArraySource, CameraFrame, Capture, Frame, LidarSweep, SemanticOccupancy, SparsePoints


def _random_pose(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = q, rng.normal(size=3) * 100
    return pose


def make_occupancy(rng, i: int) -> SemanticOccupancy | None:
    """A small random grid; the variant cycles with ``i``: full (ego frame, both masks as bool,
    int32 instances), minimal (world frame, scalar voxel size, a uint8 lidar mask), none."""
    shape = (6, 5, 3)
    semantics = np.where(rng.uniform(size=shape) < 0.3, rng.integers(1, 17, shape), 0).astype(np.uint8)
    if i % 3 == 0:
        return SemanticOccupancy(
            semantics=ArraySource.of(semantics),
            origin=np.array([-1.2, -1.0, -0.6]) + rng.uniform(size=3),
            voxel_size=np.array([0.4, 0.4, 0.2 + rng.uniform() / 7]),
            mask_camera=ArraySource.of(rng.uniform(size=shape) < 0.5),
            mask_lidar=ArraySource.of(rng.uniform(size=shape) < 0.7),
            instances=ArraySource.of(rng.integers(0, 4, shape).astype(np.int32)),
        )
    if i % 3 == 1:
        return SemanticOccupancy(semantics=ArraySource.of(semantics), origin=rng.normal(size=3) * 100,
                                 voxel_size=0.5, frame="world",
                                 mask_lidar=ArraySource.of((rng.uniform(size=shape) < 0.7).astype(np.uint8)))  # fmt: skip
    return None


def make_capture(seed=0, frames=2, occupancy=True, size=(5, 7)) -> Capture:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        cams = {}
        for name, channels in (("CAM_FRONT", 3), ("CAM/BACK LEFT", 4)):
            h, w = size
            cams[name] = CameraFrame(
                camera=name,
                K=np.array([[rng.uniform(5, 9), 0.1, 3.1], [0, rng.uniform(5, 9), 2.2], [0, 0, 1]]),
                cam2world=_random_pose(rng),
                width=w, height=h,
                image=ArraySource.of(rng.integers(0, 256, (h, w, channels), dtype=np.uint8)),
                timestamp=1532402927.612460 + i * 0.5 + rng.uniform(),
                depth=ArraySource.of(rng.uniform(0, 80, (h, w)).astype(np.float32)),
                semantic=ArraySource.of(rng.integers(0, 17, (h, w)).astype(np.int32)) if channels == 3 else None,
                instance=ArraySource.of(rng.integers(0, 9, (h, w)).astype(np.int64)) if channels == 3 else None,
                distortion=np.array([0.1, -0.01, 0.001, 0.0, 0.2]) if channels == 4 else None,
            )  # fmt: skip
        n = int(rng.integers(10, 50))
        lidar = {
            "LIDAR_TOP": LidarSweep(
                sensor="LIDAR_TOP",
                points=ArraySource.of(rng.normal(size=(n, 5)).astype(np.float32)),
                columns=("x", "y", "z", "intensity", "ring"),
                sensor2world=_random_pose(rng),
                timestamp=1532402927.647951 + i * 0.5,
                semantic=ArraySource.of(rng.integers(0, 17, n).astype(np.uint8)),
            )
        }
        out.append(Frame(index=i, cameras=cams, lidar=lidar, timestamp=0.5 * i, ego2world=_random_pose(rng),
                         occupancy=make_occupancy(rng, i) if occupancy else None))  # fmt: skip
    points = SparsePoints(xyz=rng.normal(size=(20, 3)), rgb=rng.integers(0, 256, (20, 3), dtype=np.uint8),
                          error=rng.uniform(size=20))  # fmt: skip
    return Capture(out, source_format="test", source="/somewhere", world_frame="test world",
                   points3d=points, metadata={"seed": seed, "splits": {"train": [0], "test": [1]}})  # fmt: skip


def assert_same_capture(a: Capture, b: Capture):
    assert (a.source_format, a.source, a.world_frame, a.metadata) == (b.source_format, b.source, b.world_frame, b.metadata)
    assert len(a.frames) == len(b.frames)
    for fa, fb in zip(a.frames, b.frames):
        assert (fa.index, fa.timestamp) == (fb.index, fb.timestamp)
        np.testing.assert_array_equal(fa.ego2world, fb.ego2world)
        assert list(fa.cameras) == list(fb.cameras) and list(fa.lidar) == list(fb.lidar)
        for name, ca in fa.cameras.items():
            cb = fb.cameras[name]
            assert (ca.camera, ca.width, ca.height, ca.timestamp) == (cb.camera, cb.width, cb.height, cb.timestamp)
            for attr in ("K", "cam2world", "distortion"):
                np.testing.assert_array_equal(getattr(ca, attr), getattr(cb, attr))
            np.testing.assert_array_equal(ca.load_image_uint8(), cb.load_image_uint8())
            for loader in ("load_depth", "load_semantic", "load_instance"):
                va, vb = getattr(ca, loader)(), getattr(cb, loader)()
                assert (va is None) == (vb is None)
                if va is not None:
                    assert va.dtype == vb.dtype
                    np.testing.assert_array_equal(va, vb)
        for name, la in fa.lidar.items():
            lb = fb.lidar[name]
            assert (la.sensor, la.columns, la.timestamp) == (lb.sensor, lb.columns, lb.timestamp)
            np.testing.assert_array_equal(la.sensor2world, lb.sensor2world)
            np.testing.assert_array_equal(la.load_points(), lb.load_points())
            for key in ("semantic", "instance"):
                va, vb = la.load_labels(key), lb.load_labels(key)
                assert (va is None) == (vb is None)
                if va is not None:
                    assert va.dtype == vb.dtype
                    np.testing.assert_array_equal(va, vb)
        assert_same_occupancy(fa.occupancy, fb.occupancy)
    if a.points3d is not None:
        for key in ("xyz", "rgb", "error"):
            np.testing.assert_array_equal(getattr(a.points3d, key), getattr(b.points3d, key))


def assert_same_occupancy(a: SemanticOccupancy | None, b: SemanticOccupancy | None):
    assert (a is None) == (b is None)
    if a is None:
        return
    assert (a.shape, a.frame, a.free_label) == (b.shape, b.frame, b.free_label)
    np.testing.assert_array_equal(a.origin, b.origin)
    np.testing.assert_array_equal(a.voxel_size, b.voxel_size)
    pairs = [(a.load_semantics(), b.load_semantics()), (a.load_instances(), b.load_instances()),
             (a.load_mask("camera"), b.load_mask("camera")), (a.load_mask("lidar"), b.load_mask("lidar"))]  # fmt: skip
    for va, vb in pairs:
        assert (va is None) == (vb is None)
        if va is not None:
            assert va.dtype == vb.dtype
            np.testing.assert_array_equal(va, vb)
