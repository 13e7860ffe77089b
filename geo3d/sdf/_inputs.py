"""Argument checks shared by the SDF modules: query points and axis-aligned boxes."""

from __future__ import annotations

import numpy as np
import torch

from geo3d.errors import SDFError


def check_query_points(points, name: str = "points", allow_empty: bool = True) -> torch.Tensor:
    """``points`` unchanged when it is a floating-point ``[..., 3]`` tensor of finite values.

    Raises:
        SDFError: not a tensor, wrong trailing dimension, not floating point, NaN/inf rows, or empty
            when ``allow_empty`` is False; the message names ``name``.
    """
    if not isinstance(points, torch.Tensor):
        raise SDFError(f"{name} must be a torch tensor [..., 3], got {type(points).__name__}")
    if points.ndim < 1 or points.shape[-1] != 3:
        raise SDFError(f"{name} must have shape [..., 3], got {list(points.shape)}")
    if not points.is_floating_point():
        raise SDFError(f"{name} must be a floating-point tensor, got {points.dtype}")
    if points.numel() == 0:
        if not allow_empty:
            raise SDFError(f"{name} is empty ({list(points.shape)}): nothing to query")
        return points
    finite = torch.isfinite(points).all(-1)
    if not bool(finite.all()):
        raise SDFError(f"{name} hold {int((~finite).sum())} rows with NaN or inf")
    return points


def check_bounds(bounds, name: str = "bounds") -> torch.Tensor:
    """``bounds`` as a float64 CPU ``[2, 3]`` tensor (min corner, max corner).

    Raises:
        SDFError: not convertible, not ``[2, 3]``, not finite, or max <= min on an axis.
    """
    try:
        if isinstance(bounds, torch.Tensor):
            box = bounds.detach().cpu().to(torch.float64)
        else:
            box = torch.as_tensor(np.asarray(bounds, dtype=np.float64), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SDFError(f"{name} must be a [2, 3] box (min corner, max corner), got {bounds!r}") from exc
    if box.shape != (2, 3):
        raise SDFError(f"{name} must have shape [2, 3] (min corner, max corner), got {list(box.shape)}")
    if not torch.isfinite(box).all() or not (box[1] > box[0]).all():
        raise SDFError(f"{name} must be finite with max > min on every axis, got {box.tolist()}")
    return box
