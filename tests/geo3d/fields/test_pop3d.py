"""geo3d.fields.pop3d: surface_mask against a neighbour count, visible_voxels on a hand-made wall and
against ray marching with fine steps, network_inputs' K scaling, and Pop3dMethod with a tiny random
network checkpoint (occupancy and features recomputed from the network here), errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from text_encoder_stub import HashEncoder

from geo3d.fields.methods import Resources
from geo3d.fields.pop3d import Pop3dMethod, Pop3dOptions, network_inputs, surface_mask, visible_voxels
from geo3d.occupancy.network import OccupancyNet, OccupancyNetConfig
from geo3d.structures.field import FieldError
from geo3d.synthetic.generate import SynthConfig, generate_capture
from geo3d.synthetic.occupancy import OccupancyGridSpec
from geo3d.training.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = SynthConfig(seed=5, frames=1, width=96, height=54, lidar_beams=4, lidar_azimuth_steps=90, occupancy=False,
                    shadows=False)
# OpenCV camera looking along ego +x: camera x = ego -y, camera y = ego -z, camera z = ego +x
LOOK_X = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def pose(rotation, position) -> torch.Tensor:
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = torch.as_tensor(rotation, dtype=torch.float64)
    out[:3, 3] = torch.as_tensor(position, dtype=torch.float64)
    return out


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# -------------------------------------------------------------------------------------- surface_mask


def surface_by_hand(occupied: np.ndarray) -> np.ndarray:
    out = np.zeros_like(occupied)
    X, Y, Z = occupied.shape
    for i, j, k in zip(*np.nonzero(occupied)):
        for di, dj, dk in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            a, b, c = i + di, j + dj, k + dk
            if not (0 <= a < X and 0 <= b < Y and 0 <= c < Z) or not occupied[a, b, c]:
                out[i, j, k] = True
                break
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_mask_matches_a_neighbour_count(seed):
    rng = np.random.default_rng(seed)
    occupied = rng.uniform(size=(9, 8, 7)) < 0.9
    got = surface_mask(torch.from_numpy(occupied))
    assert got.dtype == torch.bool
    expected = surface_by_hand(occupied)
    assert 0 < expected.sum() < occupied.sum()  # some interior voxels
    assert np.array_equal(got.numpy(), expected)


def test_surface_mask_of_a_full_and_an_empty_grid():
    full = torch.ones(4, 5, 6, dtype=torch.bool)
    inner = torch.zeros_like(full)
    inner[1:-1, 1:-1, 1:-1] = True
    assert torch.equal(surface_mask(full), full & ~inner)  # outside the grid counts as free
    assert not surface_mask(torch.zeros_like(full)).any()


# ------------------------------------------------------------------------------------ visible_voxels


def test_a_wall_hides_what_is_behind_it():
    spec = OccupancyGridSpec((-2.0, -2.0, -2.0), (2.0, 2.0, 2.0), 0.5)  # 8 x 8 x 8, voxel i spans x = -2 + i / 2
    occupied = torch.zeros(spec.shape, dtype=torch.bool)
    occupied[5:7] = True  # a wall two voxels thick at x = 0.5 .. 1.5, covering the whole y-z extent
    occupied[0, 3, 3] = True  # behind the camera
    occupied[2, 0, 3] = True  # beside the camera, outside its field of view
    height = width = 16
    K = torch.tensor([[[16.0, 0.0, 7.5], [0.0, 16.0, 7.5], [0.0, 0.0, 1.0]]])  # ~53 degrees
    cam2ego = pose(LOOK_X, (-1.0, 0.03, 0.02))[None]
    visible = visible_voxels(occupied, spec, K, cam2ego, (height, width), stride=1)
    assert visible.dtype == torch.bool and not (visible & ~occupied).any()
    assert not visible[6].any() and not visible[0, 3, 3] and not visible[2, 0, 3]  # hidden, behind, outside
    # the front face: at x = 0.5 (1.5 m ahead) the view spans |y|, |z| < 0.75 m, i.e. voxels j, k = 2..5
    expected = torch.zeros_like(occupied)
    expected[5, 2:6, 2:6] = True
    assert torch.equal(visible, expected)
    # a camera behind the wall (looking the other way, -x) sees its back face instead
    back = pose(LOOK_X @ np.diag([-1.0, 1.0, -1.0]), (1.9, 0.03, 0.02))[None]  # camera x = ego +y, z = ego -x
    seen_back = visible_voxels(occupied, spec, torch.tensor([[[4.0, 0.0, 7.5], [0.0, 4.0, 7.5], [0.0, 0.0, 1.0]]]),
                               back, (height, width), stride=1)
    assert seen_back[6].any() and not seen_back[5].any()


def march(occupied: np.ndarray, spec, origins: np.ndarray, directions: np.ndarray, step: float) -> set:
    """First occupied voxel of each ray by small fixed steps (``step`` metres)."""
    lower, size = np.asarray(spec.lower), spec.voxel_size
    far = np.linalg.norm(np.asarray(spec.upper) - lower) + np.linalg.norm(origins - lower, axis=1).max()
    t = np.arange(0.0, far, step)
    hits = set()
    for o, d in zip(origins, directions):
        ijk = np.floor((o + t[:, None] * d - lower) / size).astype(np.int64)
        inside = ((ijk >= 0) & (ijk < spec.shape)).all(1)
        first = np.flatnonzero(inside)[occupied[tuple(ijk[inside].T)]]
        if len(first):
            hits.add(tuple(ijk[first[0]].tolist()))
    return hits


def rays_by_hand(K: np.ndarray, cam2ego: np.ndarray, image_size, stride):
    """Rays through the pixel centres of the image shrunk to (H // stride, W // stride), in full-size pixels."""
    height, width = image_size
    h, w = height // stride, width // stride
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    u_full, v_full = (u + 0.5) * width / w - 0.5, (v + 0.5) * height / h - 0.5
    pixels = np.stack([u_full.ravel(), v_full.ravel(), np.ones(h * w)])
    directions = (cam2ego[:3, :3] @ np.linalg.inv(K) @ pixels).T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return np.broadcast_to(cam2ego[:3, 3], directions.shape), directions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_visible_voxels_match_ray_marching(seed):
    rng = np.random.default_rng(seed)
    spec = OccupancyGridSpec((-2.0, -2.0, -1.0), (2.0, 2.0, 1.0), 0.5)  # 8 x 8 x 4
    occupied = rng.uniform(size=spec.shape) < 0.12
    image_size, stride = (13, 17), 2  # not a multiple of the stride
    Ks, poses = [], []
    for c, (yaw, position) in enumerate([(0.3, (-2.6, -0.4, 0.13)), (2.5 + seed, (0.1, 0.2, 0.31))]):
        Ks.append([[9.0 + c, 0.0, 8.2], [0.0, 9.5, 6.1], [0.0, 0.0, 1.0]])
        tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(0.2), -np.sin(0.2)], [0.0, np.sin(0.2), np.cos(0.2)]])
        poses.append(pose(rotation_z(yaw) @ LOOK_X @ tilt, position).numpy())
        cell = np.floor((np.array(position) - spec.lower) / spec.voxel_size).astype(int)
        if ((cell >= 0) & (cell < spec.shape)).all():
            occupied[tuple(cell)] = False  # the camera is not inside a voxel
    K, cam2ego = torch.tensor(Ks), torch.tensor(np.stack(poses))
    visible = visible_voxels(torch.from_numpy(occupied), spec, K, cam2ego, image_size, stride)
    expected = set()
    for c in range(2):
        origins, directions = rays_by_hand(np.array(Ks[c]), poses[c], image_size, stride)
        expected |= march(occupied, spec, origins, directions, step=2e-4)
    got = {tuple(v) for v in torch.nonzero(visible).tolist()}
    assert len(expected) > 10 and got == expected
    assert torch.equal(visible_voxels(torch.zeros(spec.shape, dtype=torch.bool), spec, K, cam2ego, image_size),
                       torch.zeros(spec.shape, dtype=torch.bool))


# ------------------------------------------------------------------------------------ network_inputs


@pytest.fixture(scope="module")
def capture():
    return generate_capture(SMALL)


def test_network_inputs_scale_K_with_the_images(capture):
    frame = capture.frames[0]
    size = (32, 40)
    images, K, cam2ego = network_inputs(frame, size)
    cams = list(frame.cameras.values())
    assert images.shape == (6, 3, *size) and K.shape == (6, 3, 3) and cam2ego.shape == (6, 4, 4)
    assert images.dtype == K.dtype == cam2ego.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    rng = np.random.default_rng(0)
    for c, cam in enumerate(cams):
        np.testing.assert_allclose(cam2ego[c].numpy(), np.linalg.inv(frame.ego2world) @ cam.cam2world, atol=1e-5)
        # points in front of the camera, projected at the original and at the network size
        p_cam = np.column_stack([rng.uniform(-2, 2, 20), rng.uniform(-1, 1, 20), rng.uniform(3, 9, 20)])
        uv = (p_cam @ np.asarray(cam.K).T)[:, :2] / p_cam[:, 2:]
        p_ego = p_cam @ cam2ego[c, :3, :3].double().numpy().T + cam2ego[c, :3, 3].double().numpy()
        back = (p_ego - cam2ego[c, :3, 3].double().numpy()) @ cam2ego[c, :3, :3].double().numpy()  # ego -> camera
        small = (back @ K[c].double().numpy().T)[:, :2] / back[:, 2:]
        scale = np.array([size[1] / cam.width, size[0] / cam.height])
        np.testing.assert_allclose(small, (uv + 0.5) * scale - 0.5, atol=1e-3)
        np.testing.assert_allclose((small + 0.5) / scale - 0.5, uv, atol=3e-3)  # and back
        # the image: the mean colour survives the resize
        full = cam.load_image_uint8()[..., :3].astype(np.float64) / 255.0
        np.testing.assert_allclose(images[c].mean((1, 2)).numpy(), full.mean((0, 1)), atol=0.02)


# ------------------------------------------------------------------------------------- Pop3dMethod


NET = OccupancyNetConfig.tiny(language_dim=16)


@pytest.fixture(scope="module")
def encoder():
    return HashEncoder(dim=16)


@pytest.fixture(scope="module")
def network(capture):
    """A tiny random network and its logits on frame 0 (inputs built here: native images, the network resizes)."""
    torch.manual_seed(0)
    net = OccupancyNet(NET).eval()
    frame = capture.frames[0]
    cams = list(frame.cameras.values())
    images = torch.stack([torch.from_numpy(cam.load_image_uint8()[..., :3].copy()).permute(2, 0, 1).float() / 255
                          for cam in cams])
    K = torch.tensor(np.stack([cam.K for cam in cams]), dtype=torch.float32)
    cam2ego = torch.tensor(np.stack([np.linalg.inv(frame.ego2world) @ cam.cam2world for cam in cams]),
                           dtype=torch.float32)
    with torch.no_grad():
        out = net(images[None], K[None], cam2ego[None])
    return net, out


@pytest.fixture(scope="module")
def checkpoint(network, encoder, tmp_path_factory):
    net, out = network
    threshold = float(out.occupancy_logits.median())  # half the voxels occupied
    path = tmp_path_factory.mktemp("pop3d") / "net.pt"
    save_checkpoint(path, net, epoch=1, extra={"net_config": net.config.to_dict(), "text_space": encoder.space,
                                                "text_encoder": "hash", "threshold": threshold})
    return path, threshold


def run(capture, checkpoint_path, encoder, **changes):
    method = Pop3dMethod(Pop3dOptions(**{"feature_dtype": "float32", **changes}),
                         Resources(text_encoder=encoder, checkpoint=checkpoint_path))
    return method.reconstruct(capture, 0)


def test_pop3d_field_is_the_network_output(capture, network, checkpoint, encoder):
    net, out = network
    path, threshold = checkpoint
    field_ = run(capture, path, encoder, features_on="all")
    spec = NET.output_grid
    assert field_.shape == spec.shape == (32, 32, 8) and field_.frame == "ego"
    np.testing.assert_allclose(field_.origin, spec.lower)
    np.testing.assert_allclose(field_.voxel_size, spec.voxel_size)
    logits = out.occupancy_logits[0].double()
    np.testing.assert_allclose(field_.occupancy, torch.sigmoid(logits - threshold).numpy(), atol=1e-4, rtol=0)
    # features: every occupied voxel (C order), the network's language head at its centre
    occupied = logits > threshold
    assert 0.3 < occupied.float().mean() < 0.7
    assert field_.indices.tolist() == torch.nonzero(occupied).tolist()
    with torch.no_grad():
        expected = net.dense_language_features(out, occupied[None])
    np.testing.assert_allclose(field_.features, expected.numpy(), atol=1e-4, rtol=0)
    assert field_.space == encoder.space and field_.colors.shape == (field_.num_features, 3)
    assert field_.labels.min() >= 1 and field_.labels.max() <= 16
    assert field_.metadata["method"] == "pop3d" and field_.metadata["threshold_logit"] == pytest.approx(threshold)
    assert field_.metadata["cameras"] == list(capture.frames[0].cameras)


def test_features_on_surface_and_visible_and_a_threshold_override(capture, network, checkpoint, encoder):
    _, out = network
    path, threshold = checkpoint
    logits = out.occupancy_logits[0]
    occupied = (logits > threshold).numpy()
    surface = run(capture, path, encoder, features_on="surface")
    assert {tuple(v) for v in surface.indices.tolist()} == set(map(tuple, np.argwhere(surface_by_hand(occupied))))
    assert surface.features.dtype == np.float32
    visible = run(capture, path, encoder, features_on="visible", feature_dtype="float16")
    assert visible.features.dtype == np.float16 and 0 < visible.num_features < occupied.sum()
    assert occupied[tuple(visible.indices.T)].all()
    # an explicit logit threshold replaces the checkpoint's
    other = run(capture, path, encoder, features_on="all", threshold=threshold + 0.5)
    np.testing.assert_allclose(other.occupancy, torch.sigmoid(logits.double() - threshold - 0.5).numpy(), atol=1e-4)
    assert other.num_features == int((logits > threshold + 0.5).sum()) < len(np.argwhere(occupied))


@pytest.mark.cuda
def test_pop3d_on_cuda_equals_cpu(capture, checkpoint, encoder):
    path, _ = checkpoint
    cpu = run(capture, path, encoder, features_on="all")
    method = Pop3dMethod(Pop3dOptions(features_on="all", feature_dtype="float32"),
                         Resources(text_encoder=encoder, checkpoint=path, device="cuda"))
    gpu = method.reconstruct(capture, 0)
    assert next(method.load()[0].parameters()).is_cuda
    np.testing.assert_allclose(gpu.occupancy, cpu.occupancy, atol=1e-3)
    on_gpu, on_cpu = set(map(tuple, gpu.indices.tolist())), set(map(tuple, cpu.indices.tolist()))
    assert len(on_gpu & on_cpu) > 0.99 * len(on_gpu | on_cpu)  # logits at the threshold may flip


class OtherSpace(HashEncoder):
    space = "hash:other"


def test_pop3d_errors(capture, checkpoint, encoder, tmp_path):
    path, _ = checkpoint
    with pytest.raises(FieldError, match="space 'hash:test' but the text encoder's in 'hash:other'.*'hash'"):
        run(capture, path, OtherSpace(dim=16))
    with pytest.raises(FieldError, match="needs a network checkpoint"):
        run(capture, None, encoder)
    with pytest.raises(FieldError, match="does not exist"):
        run(capture, tmp_path / "missing.pt", encoder)
    with pytest.raises(FieldError, match="features_on"):
        run(capture, path, encoder, features_on="inside")
    with pytest.raises(FieldError, match="feature_dtype"):
        run(capture, path, encoder, feature_dtype="float64")
    with pytest.raises(FieldError, match="ray_stride"):
        Pop3dMethod(Pop3dOptions(ray_stride=0))  # bad options fail when the method is built
    with pytest.raises(FieldError, match="threshold must be finite"):
        Pop3dMethod(Pop3dOptions(threshold=float("nan")))
    with pytest.raises(FieldError, match="out of range"):
        Pop3dMethod(Pop3dOptions(), Resources(text_encoder=encoder, checkpoint=path)).reconstruct(capture, 1)
