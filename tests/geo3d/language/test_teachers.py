"""DenseFeatures pixel <-> cell convention and sample_features against a NumPy bilinear reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo3d.language.teachers import DenseFeatures, TeacherError, sample_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def numpy_bilinear(grid: np.ndarray, x: float, y: float) -> np.ndarray:
    """Bilinear interpolation of ``grid [h, w, D]`` at cell coordinates (x, y), clamped to the border."""
    h, w, _ = grid.shape
    x = min(max(x, 0.0), w - 1.0)
    y = min(max(y, 0.0), h - 1.0)
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    top = (1 - fx) * grid[y0, x0] + fx * grid[y0, x1]
    bottom = (1 - fx) * grid[y1, x0] + fx * grid[y1, x1]
    return (1 - fy) * top + fy * bottom


def random_dense(cams=2, h=5, w=7, dim=6, stride=(8.0, 6.0), seed=0) -> DenseFeatures:
    gen = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(cams, h, w, dim, generator=gen), dim=-1)
    return DenseFeatures(features, stride, (int(h * stride[1]), int(w * stride[0])))


def test_cell_centres_return_cell_features():
    dense = random_dense()
    rows, cols = np.meshgrid(np.arange(5), np.arange(7), indexing="ij")
    uv = np.stack([(cols + 0.5) * 8.0 - 0.5, (rows + 0.5) * 6.0 - 0.5], -1).reshape(-1, 2)
    cells = dense.pixel_to_cell(torch.tensor(uv))
    np.testing.assert_allclose(cells.numpy(), np.stack([cols, rows], -1).reshape(-1, 2), atol=1e-12)
    sampled = sample_features(dense, torch.tensor(uv, dtype=torch.float32)[None].expand(2, -1, -1))
    torch.testing.assert_close(sampled, dense.features.reshape(2, -1, 6), rtol=0, atol=1e-6)


def test_bilinear_matches_numpy_reference_including_border():
    dense = random_dense(seed=1)
    rng = np.random.default_rng(0)
    H, W = dense.image_size
    uv = rng.uniform([-10, -10], [W + 10, H + 10], size=(2, 50, 2))  # some outside: border clamp
    raw = sample_features(dense, torch.tensor(uv, dtype=torch.float32), normalize=False)
    unit = sample_features(dense, torch.tensor(uv, dtype=torch.float32))
    feats = dense.features.numpy()
    for c in range(2):
        for n in range(50):
            x = (uv[c, n, 0] + 0.5) / 8.0 - 0.5
            y = (uv[c, n, 1] + 0.5) / 6.0 - 0.5
            ref = numpy_bilinear(feats[c], x, y)
            np.testing.assert_allclose(raw[c, n].numpy(), ref, atol=1e-5)
            np.testing.assert_allclose(unit[c, n].numpy(), ref / np.linalg.norm(ref), atol=1e-5)


def test_single_camera_and_empty_points():
    dense = random_dense(cams=1)
    uv = torch.tensor([[3.0, 4.0], [20.0, 10.0]])
    torch.testing.assert_close(sample_features(dense, uv), sample_features(dense, uv[None])[0])
    assert sample_features(dense, torch.zeros(0, 2)).shape == (0, 6)
    assert sample_features(random_dense(), torch.zeros(2, 0, 2)).shape == (2, 0, 6)


def test_sample_errors():
    dense = random_dense()
    for uv, match in [
        (torch.zeros(5, 3), r"\[C, N, 2\]"),
        (torch.zeros(5, 2), "2 cameras"),
        (torch.zeros(3, 5, 2), "3 cameras"),
        (torch.full((2, 1, 2), float("nan")), "NaN"),
        (np.zeros((2, 5, 2)), "tensor"),
    ]:
        with pytest.raises(TeacherError, match=match):
            sample_features(dense, uv)
    with pytest.raises(TeacherError, match="dense.features"):
        sample_features(DenseFeatures(torch.zeros(4, 4), (1.0, 1.0), (4, 4)), torch.zeros(1, 2))
