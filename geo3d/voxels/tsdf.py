"""Truncated signed distance (TSDF) fusion of posed depth images on a block-sparse voxel grid.

:class:`TSDFVolume` follows KinectFusion / Open3D's ``ScalableTSDFVolume`` / voxblox: voxels live in
``R^3`` blocks (``block_resolution`` R, default 8) allocated on demand around the observed surface, so a
room at 1 cm fits in memory. The grid is geo3d's (docs/voxels.md) with origin (0, 0, 0): voxel
``(i, j, k)`` has its centre at ``(i + 0.5, j + 0.5, k + 0.5) * voxel_size`` in the world frame, and
block ``b`` holds voxels ``b * R ... b * R + R - 1`` per axis.

Integration of one frame (:meth:`TSDFVolume.integrate`), vectorised over voxels in PyTorch:

1. back-project every ``allocation_stride``-th valid depth pixel; allocate every block that the box
   ``point +- sdf_trunc`` touches (as Open3D does);
2. project the centres of all voxels of those blocks into the image (nearest pixel);
3. signed distance ``sdf = (depth(u, v) - z_voxel) * |K^-1 (u, v, 1)|`` (``sdf_mode="ray"``: the distance
   along the pixel's ray, Open3D's legacy integration) or ``depth(u, v) - z_voxel`` (``"projective"``:
   along the optical axis); voxels with ``sdf < -sdf_trunc`` (behind the surface) are skipped;
4. ``tsdf = min(1, sdf / sdf_trunc)`` in [-1, 1] and a running average with weight 1 per observation:
   ``tsdf <- (W tsdf + tsdf_new) / (W + 1)``, ``W <- min(W + 1, max_weight)``; colours and feature
   vectors are averaged with the same weights.

Surfaces come out by marching cubes over the observed voxels (weight > 0; cubes touching an
unobserved voxel make no triangles) on a dense crop of the allocated blocks, cut into slabs along x
when large (:meth:`TSDFVolume.extract_mesh`), so the surface is continuous across block borders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch

from geo3d.errors import VoxelError
from geo3d.geometry.poses import check_intrinsics, check_pose
from geo3d.structures.mesh import TriangleMesh
from geo3d.voxels.grid import VoxelGrid, _blend, _corner_weights, _CORNERS, check_points, check_voxel_size
from geo3d.voxels._tsdf_kernels import allocation_kernel, empty, integrate_kernel
from geo3d.voxels.marching_cubes import marching_cubes

_KEY_OFFSET = 1 << 20  # block coordinates in [-2^20, 2^20) pack into 21 bits each
_POSE_TOL = 1e-3  # KinectFusion-style poses are orthonormal to ~2e-4 only


class SurfacePoints(NamedTuple):
    """Result of :meth:`TSDFVolume.extract_points`: points on the fused surface (the mesh vertices).

    Attributes:
        points: ``[P, 3]`` float32 world positions, metres.
        normals: ``[P, 3]`` outward unit normals.
        colors: ``[P, 3]`` RGB in [0, 1], or None for a volume without colour.
        features: ``[P, C]`` fused feature vectors, or None for a volume without features.
    """

    points: torch.Tensor
    normals: torch.Tensor
    colors: torch.Tensor | None
    features: torch.Tensor | None


def _pack(block_coords: torch.Tensor) -> torch.Tensor:
    shifted = block_coords + _KEY_OFFSET
    return (shifted[:, 0] << 42) | (shifted[:, 1] << 21) | shifted[:, 2]


class TSDFVolume:
    """A block-sparse TSDF volume with optional colour and per-voxel feature vectors (module docstring).

    Args:
        voxel_size: voxel edge, metres (> 0).
        sdf_trunc: truncation distance, metres (> 0); default ``4 * voxel_size`` (Open3D's examples use
            4-5 voxels: thinner loses surfaces to depth noise, thicker blurs thin structures).
        block_resolution: voxels per block edge (R); blocks of ``R^3`` voxels are the allocation unit.
        color: also fuse ``[H, W, 3]`` colour images.
        feature_dim: length C of per-pixel feature vectors to fuse (0: none).
        max_weight: cap of the per-voxel observation weight (a larger cap averages more frames; a small
            one lets the volume follow changes).
        sdf_mode: ``"ray"`` (distance along the pixel ray, Open3D's legacy ``ScalableTSDFVolume``) or
            ``"projective"`` (along the optical axis).
        allocation_stride: back-project every n-th pixel row and column to allocate blocks (Open3D: 4).
        backend: ``"numba"`` (compiled CPU kernel, one pass over the voxels, threaded over blocks),
            ``"torch"`` (the vectorised PyTorch reference; runs on any device), or ``"auto"``: numba
            for CPU volumes, torch otherwise. Both give the same volume (up to float rounding).
        device: where the voxel data lives (``"cpu"`` or ``"cuda"``); inputs are moved there.

    Storage: ``tsdf`` and ``weight`` are flat ``[B * R^3]`` float32 tensors (block row ``b`` owns rows
    ``b*R^3 ... (b+1)*R^3 - 1``, voxels in x-slowest order), ``color [B*R^3, 3]`` in [0, 1],
    ``features [B*R^3, C]``; ``block_coords [B, 3]`` int64 and a sorted key index for the lookup.
    """

    def __init__(self, voxel_size: float, sdf_trunc: float | None = None, *, block_resolution: int = 8,
                 color: bool = False, feature_dim: int = 0, max_weight: float = 1e4, sdf_mode: str = "ray",
                 allocation_stride: int = 4, backend: str = "auto", device: str | torch.device = "cpu") -> None:
        self.voxel_size = check_voxel_size(voxel_size)
        self.sdf_trunc = check_voxel_size(4.0 * self.voxel_size if sdf_trunc is None else sdf_trunc, "sdf_trunc")
        if int(block_resolution) != block_resolution or not 2 <= block_resolution <= 64:
            raise VoxelError(f"block_resolution must be an integer in [2, 64], got {block_resolution!r}")
        if int(feature_dim) != feature_dim or feature_dim < 0:
            raise VoxelError(f"feature_dim must be an integer >= 0, got {feature_dim!r}")
        if not max_weight >= 1:
            raise VoxelError(f"max_weight must be >= 1, got {max_weight!r}")
        if sdf_mode not in ("ray", "projective"):
            raise VoxelError(f"sdf_mode must be 'ray' or 'projective', got {sdf_mode!r}")
        if int(allocation_stride) != allocation_stride or allocation_stride < 1:
            raise VoxelError(f"allocation_stride must be an integer >= 1, got {allocation_stride!r}")
        if backend not in ("auto", "torch", "numba"):
            raise VoxelError(f"backend must be 'auto', 'torch' or 'numba', got {backend!r}")
        self.block_resolution = int(block_resolution)
        self.has_color = bool(color)
        self.feature_dim = int(feature_dim)
        self.max_weight = float(max_weight)
        self.sdf_mode = sdf_mode
        self.allocation_stride = int(allocation_stride)
        self.device = torch.device(device)
        if backend == "numba" and self.device.type != "cpu":
            raise VoxelError(f"backend='numba' runs on CPU volumes only, got device {self.device}")
        if backend == "auto":
            backend = "numba" if self.device.type == "cpu" and integrate_kernel() is not None else "torch"
        self.backend = backend
        r = self.block_resolution
        local = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
        self._local = local.to(self.device)  # [R^3, 3] voxel offsets inside a block
        self.block_coords = torch.zeros((0, 3), dtype=torch.int64, device=self.device)
        self._sorted_keys = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._sorted_rows = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._capacity = 0
        self._tsdf = torch.zeros(0, device=self.device)
        self._weight = torch.zeros(0, device=self.device)
        self._color = torch.zeros((0, 3), device=self.device) if self.has_color else None
        self._features = torch.zeros((0, self.feature_dim), device=self.device) if self.feature_dim else None

    # ---------------------------------------------------------------------------------- storage
    @property
    def num_blocks(self) -> int:
        """Allocated blocks B."""
        return int(self.block_coords.shape[0])

    @property
    def tsdf(self) -> torch.Tensor:
        """``[B * R^3]`` fused truncated distances in [-1, 1] (units of ``sdf_trunc``; 0 where unobserved)."""
        return self._tsdf[: self.num_blocks * self._local.shape[0]]

    @property
    def weight(self) -> torch.Tensor:
        """``[B * R^3]`` observation weights (0: never observed)."""
        return self._weight[: self.num_blocks * self._local.shape[0]]

    def memory_bytes(self) -> int:
        """Bytes held by the voxel data (allocated capacity included)."""
        held = [self._tsdf, self._weight, self._color, self._features, self.block_coords]
        return sum(t.numel() * t.element_size() for t in held if t is not None)

    def _block_rows(self, block_coords: torch.Tensor) -> torch.Tensor:
        """``[N]`` row of every block coordinate ``[N, 3]``, -1 where not allocated."""
        if self._sorted_keys.numel() == 0:
            return torch.full((block_coords.shape[0],), -1, dtype=torch.int64, device=self.device)
        keys = _pack(block_coords)
        pos = torch.searchsorted(self._sorted_keys, keys).clamp(max=self._sorted_keys.shape[0] - 1)
        found = self._sorted_keys[pos] == keys
        return torch.where(found, self._sorted_rows[pos], torch.full_like(pos, -1))

    def _allocate(self, keys: torch.Tensor) -> torch.Tensor:
        """Rows of the blocks with unique packed ``keys``, allocating the missing ones."""
        coords = torch.stack([(keys >> 42) & 0x1FFFFF, (keys >> 21) & 0x1FFFFF, keys & 0x1FFFFF], 1) - _KEY_OFFSET
        rows = self._block_rows(coords)
        missing = rows < 0
        count = int(missing.sum())
        if count:
            first = self.num_blocks
            new_rows = torch.arange(first, first + count, device=self.device)
            rows[missing] = new_rows
            self.block_coords = torch.cat([self.block_coords, coords[missing]])
            keys_all = torch.cat([self._sorted_keys, keys[missing]])
            rows_all = torch.cat([self._sorted_rows, new_rows])
            order = torch.argsort(keys_all)
            self._sorted_keys, self._sorted_rows = keys_all[order], rows_all[order]
            self._grow(self.num_blocks * self._local.shape[0])
        return rows

    def _grow(self, voxels: int) -> None:
        if voxels <= self._capacity:
            return
        capacity = max(voxels, int(self._capacity * 1.5))

        def grown(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            out = t.new_zeros((capacity, *t.shape[1:]))
            out[: t.shape[0]] = t
            return out

        self._tsdf, self._weight = grown(self._tsdf), grown(self._weight)
        self._color, self._features = grown(self._color), grown(self._features)
        self._capacity = capacity

    # ---------------------------------------------------------------------------------- integration
    def _check_frame(self, depth, K, cam2world, color, features, features_K):
        depth = _tensor(depth, self.device)
        if depth.ndim != 2 or not depth.is_floating_point():
            raise VoxelError(f"depth: expected a floating [H, W] image in metres, "
                             f"got {depth.dtype} {list(depth.shape)}")
        height, width = depth.shape
        K = check_intrinsics(_numpy(K), "K")
        cam2world = check_pose(_numpy(cam2world), "cam2world", tol=_POSE_TOL)
        if color is not None:
            if not self.has_color:
                raise VoxelError("color given to a TSDFVolume made with color=False")
            color = _tensor(color, self.device)
            if tuple(color.shape) != (height, width, 3):
                raise VoxelError(f"color: expected shape [{height}, {width}, 3], got {list(color.shape)}")
            color = (color.float() / 255.0 if color.dtype == torch.uint8 else color.float()).contiguous()
        elif self.has_color:
            raise VoxelError("this TSDFVolume fuses colour: pass color [H, W, 3]")
        if features is not None:
            features = _tensor(features, self.device)
            if features.ndim != 3 or features.shape[2] != self.feature_dim or not features.is_floating_point():
                raise VoxelError(f"features: expected a floating [h, w, {self.feature_dim}] map, "
                                 f"got {features.dtype} {list(features.shape)}")
            if features_K is None:
                scale = np.diag([features.shape[1] / width, features.shape[0] / height, 1.0])
                features_K = scale @ K
            features_K = check_intrinsics(_numpy(features_K), "features_K")
        elif self.feature_dim:
            raise VoxelError(f"this TSDFVolume fuses {self.feature_dim} features: pass features [h, w, C]")
        return depth.float(), K, cam2world, color, features, features_K

    def integrate(self, depth, K, cam2world, color=None, features=None, features_K=None, *,
                  depth_max: float = 3.0, depth_min: float = 0.0) -> None:
        """Fuse one posed depth image (and its colour / feature map) into the volume.

        Args:
            depth: ``[H, W]`` z-depth in metres (tensor or array); 0, NaN and values outside
                ``(depth_min, depth_max)`` are invalid.
            K: ``[3, 3]`` pinhole intrinsics of the depth image, pixels.
            cam2world: ``[4, 4]`` camera-to-world pose (OpenCV axes: x right, y down, z forward).
            color: ``[H, W, 3]`` uint8 or float RGB in [0, 1], registered to the depth image (volumes
                made with ``color=True``).
            features: ``[h, w, C]`` per-pixel feature vectors (volumes with ``feature_dim=C``), at any
                resolution; looked up at the nearest feature pixel (clamped to the map's border).
            features_K: ``[3, 3]`` intrinsics of the feature map; default ``K`` scaled by ``(w/W, h/H)``.
            depth_max, depth_min: valid depth range, metres (Open3D's ``depth_trunc`` is ``depth_max``).

        Raises:
            VoxelError: wrong image shapes/dtypes, colour or features missing or unexpected.
            CalibrationError: invalid ``K``, a NaN/inf or non-rigid pose.
        """
        depth, K_np, pose, color, features, features_K = self._check_frame(depth, K, cam2world, color, features,
                                                                           features_K)
        if not depth_max > depth_min >= 0:
            raise VoxelError(f"need depth_max > depth_min >= 0, got depth_max={depth_max}, depth_min={depth_min}")
        if self.backend == "numba":
            d = depth.numpy()
            with np.errstate(invalid="ignore"):
                depth = torch.from_numpy(np.where((d > depth_min) & (d < depth_max), d, np.float32(0)))
        else:
            depth = torch.where(torch.isfinite(depth) & (depth > depth_min) & (depth < depth_max), depth,
                                torch.zeros_like(depth))
        rows = self._allocate_frame(depth, K_np, pose)
        if rows.numel() == 0:
            return
        if self.backend == "numba":
            self._update_numba(rows, depth, K_np, pose, color, features, features_K)
        else:
            self._update(rows, depth, K_np, pose, color, features, features_K)

    def _update_numba(self, rows, depth, K, pose, color, features, features_K) -> None:
        height, width = depth.shape
        world2cam = np.linalg.inv(pose)[:3]
        ray_scale = self._ray_scale(K, height, width).numpy() if self.sdf_mode == "ray" else empty(0)
        integrate_kernel()(
            rows.numpy(), self.block_coords.numpy(), self.block_resolution, self.voxel_size, K @ world2cam,
            depth.numpy(), ray_scale, self.sdf_trunc, self.max_weight, self._tsdf.numpy(), self._weight.numpy(),
            self._color.numpy() if color is not None else empty(0, 3),
            color.numpy() if color is not None else empty(0, 0, 3),
            self._features.numpy() if features is not None else empty(0, 0),
            features.float().contiguous().numpy() if features is not None else empty(0, 0, 0),
            features_K @ world2cam if features is not None else np.zeros((3, 4)),
        )

    def _allocate_frame(self, depth: torch.Tensor, K: np.ndarray, pose: np.ndarray) -> torch.Tensor:
        if self.backend == "numba":
            keys = allocation_kernel()(depth.numpy(), self.allocation_stride, K, pose, self.sdf_trunc,
                                       self.voxel_size * self.block_resolution, _KEY_OFFSET)
            if keys.size == 0:
                return torch.zeros(0, dtype=torch.int64, device=self.device)
            return self._allocate(torch.from_numpy(np.unique(keys)))
        stride = self.allocation_stride
        sub = depth[::stride, ::stride]
        v, u = torch.nonzero(sub > 0, as_tuple=True)
        if v.numel() == 0:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        z = sub[v, u]
        x = ((u * stride).float() - K[0, 2] - K[0, 1] * ((v * stride).float() - K[1, 2]) / K[1, 1]) / K[0, 0] * z
        y = ((v * stride).float() - K[1, 2]) / K[1, 1] * z
        pose_t = torch.as_tensor(pose, dtype=torch.float32, device=self.device)
        world = torch.stack([x, y, z], 1) @ pose_t[:3, :3].T + pose_t[:3, 3]
        block_edge = self.voxel_size * self.block_resolution
        low = torch.floor((world - self.sdf_trunc) / block_edge).to(torch.int64)
        high = torch.floor((world + self.sdf_trunc) / block_edge).to(torch.int64)
        if bool(((low < -_KEY_OFFSET) | (high >= _KEY_OFFSET)).any()):
            raise VoxelError(f"depth points lie beyond {_KEY_OFFSET} blocks from the origin: voxel_size too small")
        keys = []
        span = int((high - low).max()) + 1  # 2 when sdf_trunc < block edge / 2
        offsets = torch.stack(torch.meshgrid(*[torch.arange(span, device=self.device)] * 3, indexing="ij"), -1)
        for offset in offsets.reshape(-1, 3):
            corner = low + offset
            ok = (corner <= high).all(dim=1)
            keys.append(_pack(corner[ok]))
        keys = torch.unique(torch.cat(keys))
        return self._allocate(keys)

    def _ray_scale(self, K: np.ndarray, height: int, width: int) -> torch.Tensor:
        """``[H * W]`` length of ``K^-1 (u, v, 1)`` per pixel (distance along the ray per unit of z), cached."""
        key = (K.tobytes(), height, width)
        if getattr(self, "_ray_scale_key", None) != key:
            v, u = torch.meshgrid(torch.arange(height, device=self.device, dtype=torch.float64),
                                  torch.arange(width, device=self.device, dtype=torch.float64), indexing="ij")
            ray_y = (v - K[1, 2]) / K[1, 1]
            ray_x = (u - K[0, 2] - K[0, 1] * ray_y) / K[0, 0]
            self._ray_scale_cache = torch.sqrt(1.0 + ray_x**2 + ray_y**2).float().reshape(-1)
            self._ray_scale_key = key
        return self._ray_scale_cache

    def _update(self, rows, depth, K, pose, color, features, features_K) -> None:
        r3 = self._local.shape[0]
        height, width = depth.shape
        # K [R | t] of world2cam, applied to voxel centres = (block * R + local + 0.5) * voxel_size
        projection = torch.as_tensor(K @ np.linalg.inv(pose)[:3], dtype=torch.float32, device=self.device)
        block_origin = (self.block_coords[rows].float() * self.block_resolution + 0.5) * self.voxel_size
        uvw_block = block_origin @ projection[:, :3].T + projection[:, 3]  # [A, 3]
        uvw_local = (self._local.float() * self.voxel_size) @ projection[:, :3].T  # [R^3, 3]
        uvw = (uvw_block[:, None, :] + uvw_local[None]).reshape(-1, 3)
        z = uvw[:, 2]
        u = torch.round(uvw[:, 0] / z).to(torch.int64)
        v = torch.round(uvw[:, 1] / z).to(torch.int64)
        visible = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        keep = torch.nonzero(visible)[:, 0]
        pixel = v[keep] * width + u[keep]
        z = z[keep]
        measured = depth.reshape(-1)[pixel]
        sdf = measured - z
        if self.sdf_mode == "ray":
            sdf = sdf * self._ray_scale(K, height, width)[pixel]
        ok = (measured > 0) & (sdf > -self.sdf_trunc)
        inner = torch.nonzero(ok)[:, 0]
        keep, pixel, sdf, z = keep[inner], pixel[inner], sdf[inner], z[inner]
        flat = rows[keep // r3] * r3 + keep % r3
        tsdf_new = torch.clamp(sdf / self.sdf_trunc, max=1.0)
        w_old = self._weight[flat]
        w_sum = w_old + 1.0
        self._tsdf[flat] = (self._tsdf[flat] * w_old + tsdf_new) / w_sum
        if color is not None:
            observed = color.reshape(-1, 3)[pixel]
            self._color[flat] = (self._color[flat] * w_old[:, None] + observed) / w_sum[:, None]
        if features is not None:
            self._fuse_features(flat, keep, rows, w_old, w_sum, pose, features, features_K)
        self._weight[flat] = torch.clamp(w_sum, max=self.max_weight)

    def _fuse_features(self, flat, keep, rows, w_old, w_sum, pose, features, features_K) -> None:
        r3 = self._local.shape[0]
        fh, fw = features.shape[:2]
        voxels = self.block_coords[rows[keep // r3]] * self.block_resolution + self._local[keep % r3]
        projection = torch.as_tensor(features_K @ np.linalg.inv(pose)[:3], dtype=torch.float32, device=self.device)
        uvw = ((voxels.float() + 0.5) * self.voxel_size) @ projection[:, :3].T + projection[:, 3]
        fu = torch.round(uvw[:, 0] / uvw[:, 2]).to(torch.int64).clamp(0, fw - 1)
        fv = torch.round(uvw[:, 1] / uvw[:, 2]).to(torch.int64).clamp(0, fh - 1)
        sampled = features[fv, fu].to(self._features.dtype)
        self._features[flat] = (self._features[flat] * w_old[:, None] + sampled) / w_sum[:, None]

    # ---------------------------------------------------------------------------------- read-out
    def _voxel_rows(self, voxels: torch.Tensor) -> torch.Tensor:
        """Flat storage row of global voxel indices ``[N, 3]``, -1 where unallocated or unobserved."""
        r = self.block_resolution
        if self.num_blocks == 0:
            return torch.full((voxels.shape[0],), -1, dtype=torch.int64, device=self.device)
        blocks = torch.div(voxels, r, rounding_mode="floor")
        local = voxels - blocks * r
        block_rows = self._block_rows(blocks)
        rows = block_rows * r**3 + (local[:, 0] * r + local[:, 1]) * r + local[:, 2]
        valid = block_rows >= 0
        rows = torch.where(valid, rows, torch.zeros_like(rows))
        if rows.numel():
            valid &= self._weight[rows] > 0
        return torch.where(valid, rows, torch.full_like(rows, -1))

    def sample(self, points: torch.Tensor, what: str = "features") -> torch.Tensor:
        """Trilinear interpolation at ``points [N, 3]`` (world, metres) of ``what`` = ``"tsdf"`` (``[N]``,
        units of ``sdf_trunc``), ``"color"`` (``[N, 3]``) or ``"features"`` (``[N, C]``), over the
        observed voxels around each point (weights renormalised; NaN where none of the 8 is observed)."""
        table = {"tsdf": self._tsdf[:, None], "color": self._color, "features": self._features}
        if what not in table:
            raise VoxelError(f"what must be 'tsdf', 'color' or 'features', got {what!r}")
        data = table[what]
        if data is None:
            raise VoxelError(f"this TSDFVolume does not fuse {what}")
        points = check_points(points).to(device=self.device, dtype=torch.float32)
        base, frac = _corner_weights(points, torch.zeros(3, dtype=torch.float64), self.voxel_size)
        idx = base[None] + _CORNERS.to(self.device)[:, None]
        rows = self._voxel_rows(idx.reshape(-1, 3)).reshape(8, -1)
        found = rows >= 0
        corner_values = torch.where(found[..., None], data[rows.clamp(min=0)], torch.zeros((), device=self.device))
        out = _blend(corner_values, frac) / _blend(found.float()[..., None], frac)
        return out[:, 0] if what == "tsdf" else out

    def _dense_slabs(self, max_voxels: int):
        """Yield ``(first sample index [3], rows [x, Y, Z])`` slabs along x covering the allocated blocks:
        ``rows`` holds the storage row of each observed voxel, -1 elsewhere (int32 when rows fit);
        consecutive slabs share one plane of samples."""
        r = self.block_resolution
        low = self.block_coords.min(0).values * r
        extent = ((self.block_coords.max(0).values + 1) * r - low).tolist()
        step = max(2, max_voxels // (extent[1] * extent[2]) - 1)
        observed = torch.nonzero(self.weight > 0)[:, 0]
        r3 = r**3
        voxels = self.block_coords[observed // r3] * r + self._local[observed % r3] - low
        dtype = torch.int32 if self.weight.numel() < 2**31 else torch.int64
        for start in range(0, extent[0] - 1, step):
            stop = min(start + step + 1, extent[0])
            pick = torch.nonzero((voxels[:, 0] >= start) & (voxels[:, 0] < stop))[:, 0]
            rows = torch.full((stop - start, extent[1], extent[2]), -1, dtype=dtype, device=self.device)
            vox = voxels[pick]
            rows[vox[:, 0] - start, vox[:, 1], vox[:, 2]] = observed[pick].to(dtype)
            yield (low + torch.tensor([start, 0, 0], device=self.device)).cpu().numpy(), rows

    def _interpolate_dense(self, data: torch.Tensor, rows: torch.Tensor, first: np.ndarray,
                           points: np.ndarray) -> torch.Tensor:
        """Trilinear ``data`` (``[B*R^3, C]``) at ``points [P, 3]`` of a slab (:meth:`_dense_slabs`) over
        its observed voxels, weights renormalised (a vertex lies on a cube edge: the linear blend of the
        edge's two voxels)."""
        origin = torch.as_tensor(first * self.voxel_size, dtype=torch.float64)
        pts = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        base, frac = _corner_weights(pts, origin, self.voxel_size)
        idx = base[None] + _CORNERS.to(self.device)[:, None]  # [8, P, 3]
        limit = torch.tensor(rows.shape, device=self.device)
        inside = ((idx >= 0) & (idx < limit)).all(dim=2)
        idx = idx.clamp(min=0).minimum(limit - 1)
        corner_rows = rows[idx[..., 0], idx[..., 1], idx[..., 2]].long()
        found = inside & (corner_rows >= 0)
        values = torch.where(found[..., None], data[corner_rows.clamp(min=0)], torch.zeros((), device=self.device))
        return _blend(values, frac) / _blend(found.float()[..., None], frac)

    def _extract(self, max_dense_voxels: int, attributes: tuple[str, ...]):
        """``(vertices, faces, normals, {attribute: [V, C] tensor})`` of the fused surface, or None."""
        if self.num_blocks == 0 or not bool((self.weight > 0).any()):
            return None
        tables = {"color": self._color, "features": self._features}
        parts = []
        offset = 0
        for first, rows in self._dense_slabs(max_dense_voxels):
            if rows.shape[0] < 2:
                continue
            observed = rows >= 0
            dense = torch.full(rows.shape, math.nan, device=self.device)
            dense[observed] = self._tsdf[rows[observed].long()]
            mesh = marching_cubes(dense, 0.0, sample_origin=(first + 0.5) * self.voxel_size, spacing=self.voxel_size)
            if mesh.num_vertices == 0:
                continue
            values = {a: self._interpolate_dense(tables[a], rows, first, mesh.vertices) for a in attributes}
            parts.append((mesh.vertices, mesh.faces + offset, mesh.vertex_normals, values))
            offset += mesh.num_vertices
        if not offset:
            return None
        vertices = np.concatenate([p[0] for p in parts])
        faces = np.concatenate([p[1] for p in parts])
        normals = np.concatenate([p[2] for p in parts])
        values = {a: torch.cat([p[3][a] for p in parts]) for a in attributes}
        if len(parts) > 1:  # weld the vertices that two slabs share on their common plane
            quantised = np.round(vertices / (self.voxel_size * 1e-4)).astype(np.int64)
            _, keep, inverse = np.unique(quantised, axis=0, return_index=True, return_inverse=True)
            vertices, normals, faces = vertices[keep], normals[keep], inverse.reshape(-1)[faces]
            values = {a: v[torch.as_tensor(keep, device=self.device)] for a, v in values.items()}
        return vertices, faces, normals, values

    def extract_mesh(self, max_dense_voxels: int = 1 << 25) -> TriangleMesh:
        """The fused zero level set as a :class:`TriangleMesh` (world frame, metres, outward normals,
        vertex colours in [0, 1] when the volume fuses colour). Marching cubes runs on dense crops of the
        allocated blocks of at most ``max_dense_voxels`` samples (8 bytes each: float32 value + int32
        row) with NaN in unobserved voxels; seams between crops are welded. Empty mesh when nothing was
        integrated."""
        out = self._extract(max_dense_voxels, ("color",) if self.has_color else ())
        if out is None:
            return TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), np.zeros((0, 3)))
        vertices, faces, normals, values = out
        colors = None
        if self.has_color:
            colors = torch.nan_to_num(values["color"], nan=0.0).clamp(0, 1).cpu().numpy().astype(np.float64)
        return TriangleMesh(vertices, faces, normals, colors)

    def extract_points(self, max_dense_voxels: int = 1 << 25) -> SurfacePoints:
        """Points on the fused surface (the vertices of :meth:`extract_mesh`) with outward normals and
        the colours / features interpolated from the observed voxels (:class:`SurfacePoints`)."""
        attributes = tuple(a for a, on in (("color", self.has_color), ("features", self.feature_dim)) if on)
        out = self._extract(max_dense_voxels, attributes)
        if out is None:
            none = torch.zeros((0, 3), device=self.device)
            return SurfacePoints(none, none, none if self.has_color else None,
                                 torch.zeros((0, self.feature_dim), device=self.device) if self.feature_dim else None)
        vertices, _, normals, values = out
        return SurfacePoints(torch.as_tensor(vertices, dtype=torch.float32, device=self.device),
                             torch.as_tensor(normals, dtype=torch.float32, device=self.device),
                             values.get("color"), values.get("features"))

    def voxels(self) -> VoxelGrid:
        """The observed voxels (weight > 0) as a sparse :class:`VoxelGrid` whose box spans the allocated
        blocks: ``values [M, 2 + 3*color + C]`` = ``tsdf`` (units of ``sdf_trunc``), ``weight``, then
        ``r, g, b`` (with colour) and the C feature channels."""
        r = self.block_resolution
        if self.num_blocks == 0:
            return VoxelGrid(torch.zeros(3), self.voxel_size, (1, 1, 1),
                             indices=torch.zeros((0, 3), dtype=torch.int64, device=self.device),
                             values=torch.zeros((0, 2 + 3 * self.has_color + self.feature_dim), device=self.device))
        low = self.block_coords.min(0).values * r
        shape = tuple(((self.block_coords.max(0).values + 1) * r - low).tolist())
        observed = torch.nonzero(self.weight > 0)[:, 0]
        indices = self.block_coords[observed // r**3] * r + self._local[observed % r**3] - low
        columns = [self._tsdf[observed, None], self._weight[observed, None]]
        columns += [t[observed] for t in (self._color, self._features) if t is not None]
        return VoxelGrid(low.double() * self.voxel_size, self.voxel_size, shape, indices=indices,
                         values=torch.cat(columns, 1))


def _tensor(array, device) -> torch.Tensor:
    """``array`` as a tensor on ``device`` (NumPy arrays copied when read-only, as decoded images can be)."""
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array, device=device)


def _numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def fuse_frames(volume: TSDFVolume, frames: Iterable[Any], progress: bool = True, *, depth_max: float = 3.0,
                depth_min: float = 0.0) -> TSDFVolume:
    """Integrate a sequence of frames into ``volume`` (with a tqdm progress bar) and return it.

    Each frame is a :class:`geo3d.structures.capture.CameraFrame` with depth (its ``K``, ``cam2world``,
    ``load_depth()`` and, for colour volumes, ``load_image_uint8()``), or a mapping with keys ``depth``,
    ``K``, ``cam2world`` and optionally ``color``, ``features``, ``features_K``.
    """
    from tqdm.auto import tqdm

    for frame in tqdm(frames, desc="TSDF fusion", unit="frame", disable=not progress):
        if isinstance(frame, dict):
            volume.integrate(frame["depth"], frame["K"], frame["cam2world"], frame.get("color"),
                             frame.get("features"), frame.get("features_K"), depth_max=depth_max, depth_min=depth_min)
            continue
        depth = frame.load_depth()
        if depth is None:
            raise VoxelError(f"frame of camera {getattr(frame, 'camera', '?')!r} has no depth image")
        color = frame.load_image_uint8() if volume.has_color else None
        volume.integrate(depth, frame.K, frame.cam2world, color, depth_max=depth_max, depth_min=depth_min)
    return volume
