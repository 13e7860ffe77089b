"""Quaternion <-> rotation matrix, for NumPy arrays and torch tensors.

Quaternions are ``(w, x, y, z)`` (scalar first, Hamilton convention) everywhere in geo3d. The
functions accept either array type and return the same type; the torch versions are
differentiable.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def quaternion_to_matrix(quaternion):
    """Rotation matrices from unit quaternions.

    Args:
        quaternion: ``[..., 4]`` as ``(w, x, y, z)``; normalised here, so any non-zero scale works.

    Returns:
        ``[..., 3, 3]`` rotation matrices (same array type and dtype as the input).
    """
    if _is_torch(quaternion):
        import torch

        q = quaternion / torch.linalg.norm(quaternion, dim=-1, keepdim=True)
        w, x, y, z = q.unbind(-1)
        stack = torch.stack
    else:
        q = np.asarray(quaternion, dtype=np.float64 if np.asarray(quaternion).dtype.kind != "f" else None)
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        w, x, y, z = (q[..., i] for i in range(4))

        def stack(items, dim):
            return np.stack(items, axis=dim)

    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    flat = stack(rows, -1)
    return flat.reshape(tuple(flat.shape[:-1]) + (3, 3))


def matrix_to_quaternion(matrix):
    """Unit quaternions ``(w, x, y, z)`` with ``w >= 0`` from rotation matrices ``[..., 3, 3]``.

    Uses the numerically stable branch selection on the largest diagonal term (Shepperd's method).
    Returns ``[..., 4]`` of the input's array type.
    """
    if _is_torch(matrix):
        import torch

        out = matrix_to_quaternion(matrix.detach().cpu().double().numpy())
        return torch.as_tensor(out, dtype=matrix.dtype, device=matrix.device)
    m = np.asarray(matrix, dtype=np.float64)
    batch = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    q = np.empty((m.shape[0], 4))
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    diag = np.stack([trace, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    case = np.argmax(diag, axis=1)
    for i in range(m.shape[0]):
        r = m[i]
        if case[i] == 0:
            s = 2.0 * np.sqrt(max(1.0 + trace[i], 0.0))
            q[i] = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
        elif case[i] == 1:
            s = 2.0 * np.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 0.0))
            q[i] = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
        elif case[i] == 2:
            s = 2.0 * np.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 0.0))
            q[i] = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
        else:
            s = 2.0 * np.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 0.0))
            q[i] = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1.0
    return q.reshape(batch + (4,))
