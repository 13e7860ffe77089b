"""Numba CPU kernel of TSDF integration (the fast path of :meth:`geo3d.voxels.tsdf.TSDFVolume.integrate`).

Same arithmetic as the PyTorch reference ``TSDFVolume._update`` (tests compare the two), but in one
pass over the voxels of the frame's blocks, in float64, threads over blocks (each block is written
by one thread only, blocks being unique). Compiled on first use and cached on disk.
"""

from __future__ import annotations

import numpy as np

prange = range  # numba.prange once the kernels are compiled (_compiled): numba imports lazily


def _integrate_blocks(rows, block_coords, resolution, voxel_size, projection, depth, ray_scale, sdf_trunc,
                      max_weight, tsdf, weight, color, color_image, features, feature_map,
                      feature_projection):  # pragma: no cover - numba kernel
    height, width = depth.shape
    r3 = resolution * resolution * resolution
    has_color = color_image.shape[0] > 0
    channels = feature_map.shape[2]
    fh, fw = feature_map.shape[0], feature_map.shape[1]
    use_ray = ray_scale.shape[0] > 0
    p = projection
    q = feature_projection
    for n in prange(rows.shape[0]):
        block = rows[n]
        base = block * r3
        for i in range(resolution):
            x = ((block_coords[block, 0] * resolution + i) + 0.5) * voxel_size
            for j in range(resolution):
                y = ((block_coords[block, 1] * resolution + j) + 0.5) * voxel_size
                for k in range(resolution):
                    z = ((block_coords[block, 2] * resolution + k) + 0.5) * voxel_size
                    w = p[2, 0] * x + p[2, 1] * y + p[2, 2] * z + p[2, 3]
                    if w <= 1e-6:
                        continue
                    u = int(np.rint((p[0, 0] * x + p[0, 1] * y + p[0, 2] * z + p[0, 3]) / w))
                    v = int(np.rint((p[1, 0] * x + p[1, 1] * y + p[1, 2] * z + p[1, 3]) / w))
                    if u < 0 or u >= width or v < 0 or v >= height:
                        continue
                    measured = depth[v, u]
                    if measured <= 0:
                        continue
                    sdf = measured - w
                    if use_ray:
                        sdf *= ray_scale[v * width + u]
                    if sdf <= -sdf_trunc:
                        continue
                    value = min(1.0, sdf / sdf_trunc)
                    row = base + (i * resolution + j) * resolution + k
                    w_old = weight[row]
                    w_sum = w_old + 1.0
                    tsdf[row] = (tsdf[row] * w_old + value) / w_sum
                    if has_color:
                        for c in range(3):
                            color[row, c] = (color[row, c] * w_old + color_image[v, u, c]) / w_sum
                    if channels:
                        fz = q[2, 0] * x + q[2, 1] * y + q[2, 2] * z + q[2, 3]
                        fu = int(np.rint((q[0, 0] * x + q[0, 1] * y + q[0, 2] * z + q[0, 3]) / fz))
                        fv = int(np.rint((q[1, 0] * x + q[1, 1] * y + q[1, 2] * z + q[1, 3]) / fz))
                        fu = min(max(fu, 0), fw - 1)
                        fv = min(max(fv, 0), fh - 1)
                        for c in range(channels):
                            features[row, c] = (features[row, c] * w_old + feature_map[fv, fu, c]) / w_sum
                    weight[row] = min(w_sum, max_weight)


def _touched_block_keys(depth, stride, K, cam2world, sdf_trunc, block_edge, key_offset):  # pragma: no cover
    """Packed keys (21 bits per axis, as ``tsdf._pack``) of the blocks touched by the boxes
    ``point +- sdf_trunc`` of every ``stride``-th valid pixel, with repeats (the caller dedups)."""
    height, width = depth.shape
    span = int(np.floor(2 * sdf_trunc / block_edge)) + 2
    out = np.empty(((height // stride + 1) * (width // stride + 1) * span**3,), dtype=np.int64)
    count = 0
    low = np.empty(3, dtype=np.int64)
    high = np.empty(3, dtype=np.int64)
    point = np.empty(3)
    for v in range(0, height, stride):
        for u in range(0, width, stride):
            z = depth[v, u]
            if z <= 0:
                continue
            y_cam = (v - K[1, 2]) / K[1, 1] * z
            x_cam = (u - K[0, 2] - K[0, 1] * (v - K[1, 2]) / K[1, 1]) / K[0, 0] * z
            for a in range(3):
                point[a] = cam2world[a, 0] * x_cam + cam2world[a, 1] * y_cam + cam2world[a, 2] * z + cam2world[a, 3]
                low[a] = int(np.floor((point[a] - sdf_trunc) / block_edge)) + key_offset
                high[a] = int(np.floor((point[a] + sdf_trunc) / block_edge)) + key_offset
            for bx in range(low[0], high[0] + 1):
                for by in range(low[1], high[1] + 1):
                    for bz in range(low[2], high[2] + 1):
                        out[count] = (bx << 42) | (by << 21) | bz
                        count += 1
    return out[:count]


_KERNELS: dict = {}


def _compiled(name: str):
    if not _KERNELS:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _KERNELS.update(integrate=None, allocate=None)
        else:
            njit = numba.njit
            globals()["prange"] = numba.prange  # resolved as a global when the kernel compiles
            _KERNELS["integrate"] = njit(cache=True, nogil=True, parallel=True)(_integrate_blocks)
            _KERNELS["allocate"] = njit(cache=True, nogil=True)(_touched_block_keys)
    return _KERNELS[name]


def integrate_kernel():
    """The compiled integration kernel, or None when Numba is not installed."""
    return _compiled("integrate")


def allocation_kernel():
    """The compiled block-allocation kernel, or None when Numba is not installed."""
    return _compiled("allocate")


def empty(*shape: int) -> np.ndarray:
    """A float32 placeholder for an absent optional array (the kernel tests ``shape[0] > 0``)."""
    return np.zeros(shape, dtype=np.float32)
