"""Tests of geo3d.voxels.tsdf: TSDF fusion against analytic scenes and Open3D's ScalableTSDFVolume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geo3d.errors import CalibrationError, VoxelError
from geo3d.voxels.conversions import grid_to_mesh
from geo3d.voxels.tsdf import TSDFVolume, fuse_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H, W = 120, 160
K = np.array([[140.0, 0.0, 79.5], [0.0, 140.0, 59.5], [0.0, 0.0, 1.0]])
CENTRE, RADIUS, WALL_Z = np.array([0.0, 0.0, 2.0]), 0.4, 2.6


def _look_at(eye, target=CENTRE):
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], 1)  # OpenCV: x right, y down, z forward
    pose[:3, 3] = eye
    return pose


def _render(pose):
    """Exact z-depth of a sphere in front of the wall z = WALL_Z, by ray casting."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    rays = rays_cam @ pose[:3, :3].T
    eye = pose[:3, 3]
    oc = eye - CENTRE
    a, b, c = (rays * rays).sum(-1), 2 * (rays @ oc), oc @ oc - RADIUS**2
    disc = b * b - 4 * a * c
    t_sphere = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    t_wall = np.where(rays[..., 2] > 1e-9, (WALL_Z - eye[2]) / np.where(rays[..., 2] > 1e-9, rays[..., 2], 1), np.inf)
    depth = np.minimum(np.where(t_sphere > 0, t_sphere, np.inf), t_wall)  # t is z-depth as rays have z = 1
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)


def _poses(count=6):
    return [_look_at(np.array([0.5 * math.sin(a), 0.2 * math.cos(a), 0.6])) for a in np.linspace(-1, 1, count)]


def _analytic_distance(points):
    sphere = np.abs(np.linalg.norm(points - CENTRE, axis=1) - RADIUS)
    return np.minimum(sphere, np.abs(points[:, 2] - WALL_Z))


def _fuse_synthetic(backend):
    volume = TSDFVolume(0.02, color=True, feature_dim=3, backend=backend)
    colour = np.zeros((H, W, 3), dtype=np.uint8)
    colour[...] = (40, 120, 200)
    features = torch.tensor([1.0, -2.0, 0.5]).expand(H // 4, W // 4, 3)  # a lower-resolution feature map
    frames = [{"depth": _render(p), "K": K, "cam2world": p, "color": colour, "features": features} for p in _poses()]
    return fuse_frames(volume, frames, progress=False)


@pytest.fixture(scope="module")
def fused_scene():
    return _fuse_synthetic("numba")


def test_numba_kernel_matches_torch_reference(fused_scene):
    reference = _fuse_synthetic("torch")
    assert reference.backend == "torch" and fused_scene.backend == "numba"
    assert torch.equal(reference.block_coords, fused_scene.block_coords)
    same = reference.weight == fused_scene.weight
    assert same.float().mean() > 0.9999 and int((reference.weight > 0).sum()) > 10000
    # float32 (torch) vs float64 (numba) projections round a handful of voxels to the neighbouring pixel
    assert (reference.tsdf - fused_scene.tsdf)[same].abs().mean() < 1e-4
    n = len(reference.weight)
    torch.testing.assert_close(reference._features[:n][same], fused_scene._features[:n][same])
    torch.testing.assert_close(reference._color[:n][same], fused_scene._color[:n][same])


def test_synthetic_surface_within_a_fraction_of_a_voxel(fused_scene):
    mesh = fused_scene.extract_mesh()
    assert mesh.num_faces > 1000
    error = _analytic_distance(mesh.vertices)
    assert np.median(error) < 0.1 * 0.02
    assert np.quantile(error, 0.99) < 0.5 * 0.02
    # the sphere is seen: vertices near its front cap exist
    assert (np.abs(np.linalg.norm(mesh.vertices - CENTRE, axis=1) - RADIUS) < 0.01).sum() > 200
    # outward normals: towards the cameras (negative z) on the sphere's front and on the wall
    on_wall = np.abs(mesh.vertices[:, 2] - WALL_Z) < 0.01
    assert (mesh.vertex_normals[on_wall, 2] < 0).mean() > 0.99
    assert np.allclose(fused_scene.sample(torch.as_tensor(mesh.vertices[::50], dtype=torch.float32), "tsdf"), 0,
                       atol=0.05)


def test_colour_and_features_fuse(fused_scene):
    surface = fused_scene.extract_points()
    np.testing.assert_allclose(surface.colors.numpy(), np.broadcast_to([40 / 255, 120 / 255, 200 / 255],
                                                                       surface.colors.shape), atol=1e-5)
    np.testing.assert_allclose(surface.features.numpy(), np.broadcast_to([1.0, -2.0, 0.5], surface.features.shape),
                               atol=1e-5)
    assert surface.points.shape == surface.normals.shape == surface.colors.shape


def test_voxels_grid_and_slabs_give_the_same_surface(fused_scene):
    mesh = fused_scene.extract_mesh()
    grid = fused_scene.voxels()
    assert grid.num_channels == 2 + 3 + 3 and bool((grid.values[:, 1] > 0).all())
    from_grid = grid_to_mesh(grid, 0.0, channel=0)
    assert from_grid.num_faces == mesh.num_faces
    np.testing.assert_allclose(np.sort(from_grid.vertices, axis=0), np.sort(mesh.vertices, axis=0), atol=1e-5)
    sliced = fused_scene.extract_mesh(max_dense_voxels=40 * 40 * 40)  # forces several welded slabs
    assert sliced.num_faces == mesh.num_faces and sliced.num_vertices == mesh.num_vertices
    np.testing.assert_allclose(np.sort(sliced.vertices, axis=0), np.sort(mesh.vertices, axis=0), atol=1e-5)


def test_matches_open3d_on_real_rgbd(rgbd_dir):
    o3d = pytest.importorskip("open3d")
    from geo3d.io.rgbd import read_7scenes
    from geo3d.points.chamfer import chamfer_distance
    from geo3d.structures.shapes import sample_surface

    frames = list(read_7scenes(rgbd_dir).camera_frames())[::4]
    voxel, trunc, depth_max = 0.02, 0.08, 3.0
    ours = fuse_frames(TSDFVolume(voxel, trunc, color=True), frames, progress=False, depth_max=depth_max)
    mesh = ours.extract_mesh()
    integration = o3d.pipelines.integration
    ref = integration.ScalableTSDFVolume(voxel_length=voxel, sdf_trunc=trunc,
                                         color_type=integration.TSDFVolumeColorType.RGB8)
    for frame in frames:
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(frame.load_image_uint8())),
            o3d.geometry.Image(frame.load_depth().astype(np.float32)), depth_scale=1.0, depth_trunc=depth_max,
            convert_rgb_to_intensity=False)
        K_ = frame.K
        ref.integrate(rgbd, o3d.camera.PinholeCameraIntrinsic(frame.width, frame.height, K_[0, 0], K_[1, 1],
                                                              K_[0, 2], K_[1, 2]), np.linalg.inv(frame.cam2world))
    ref_mesh = ref.extract_triangle_mesh()
    ref_vertices, ref_faces = np.asarray(ref_mesh.vertices), np.asarray(ref_mesh.triangles)
    assert abs(mesh.num_faces - len(ref_faces)) < 0.02 * len(ref_faces)
    a, _ = sample_surface(mesh.vertices, mesh.faces, 30000, 0)
    b, _ = sample_surface(ref_vertices, ref_faces, 30000, 1)
    symmetric = 0.5 * float(chamfer_distance(torch.as_tensor(a), torch.as_tensor(b), norm="l2"))
    assert symmetric < voxel
    # sharper: our surface samples lie on Open3D's surface (point-to-mesh distances)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(ref_vertices.astype(np.float32)), o3d.core.Tensor(ref_faces.astype(np.uint32)))
    to_ref = scene.compute_distance(o3d.core.Tensor(a.astype(np.float32))).numpy()
    assert np.median(to_ref) < 0.05 * voxel and np.mean(to_ref) < 0.2 * voxel
    # colours: per-vertex colours close to Open3D's at the nearest vertex
    from scipy.spatial import cKDTree

    dist, nearest = cKDTree(ref_vertices).query(mesh.vertices)
    close = dist < 1e-4
    assert close.mean() > 0.9
    assert np.abs(mesh.vertex_colors[close] - np.asarray(ref_mesh.vertex_colors)[nearest[close]]).mean() < 0.01


def test_errors():
    with pytest.raises(VoxelError, match="voxel_size"):
        TSDFVolume(0.0)
    with pytest.raises(VoxelError, match="voxel_size"):
        TSDFVolume(-0.01)
    with pytest.raises(VoxelError, match="sdf_trunc"):
        TSDFVolume(0.01, sdf_trunc=-1.0)
    volume = TSDFVolume(0.05)
    depth, pose = _render(_poses(1)[0]), _poses(1)[0]
    with pytest.raises(VoxelError, match="depth"):
        volume.integrate(depth[None], K, pose)
    bad_pose = pose.copy()
    bad_pose[0, 3] = np.nan
    with pytest.raises(CalibrationError, match="NaN"):
        volume.integrate(depth, K, bad_pose)
    bad_K = K.copy()
    bad_K[0, 0] = -1.0
    with pytest.raises(CalibrationError, match="focal"):
        volume.integrate(depth, bad_K, pose)
    with pytest.raises(CalibrationError, match="3x3"):
        volume.integrate(depth, K[:2], pose)
    with pytest.raises(VoxelError, match="color"):
        volume.integrate(depth, K, pose, color=np.zeros((H, W, 3), np.uint8))
    with pytest.raises(VoxelError, match="color"):
        TSDFVolume(0.05, color=True).integrate(depth, K, pose)
    with pytest.raises(VoxelError, match="features"):
        TSDFVolume(0.05, feature_dim=2).integrate(depth, K, pose, features=torch.zeros(10, 10, 3))
    with pytest.raises(VoxelError, match="depth_max"):
        volume.integrate(depth, K, pose, depth_max=0.0)
    assert volume.num_blocks == 0 and volume.extract_mesh().num_faces == 0
