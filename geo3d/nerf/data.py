"""Training rays of a capture: one ray and one colour per pixel of every chosen camera image.

Colours stay ``uint8`` (a 200x200x80 scene holds 3.2 M rays in ~100 MB with float rays); RGBA images keep
their alpha so that the background can be chosen per batch (white, black, or random colours: training on
random backgrounds forces the field to model transparency instead of painting the background into space).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from geo3d.cameras.functional import generate_rays
from geo3d.errors import CaptureError
from geo3d.structures.capture import CameraFrame, Capture

BACKGROUNDS = ("white", "black", "random")
BLENDER_BOX = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
"""The NeRF synthetic scenes' box (nerfacc and Instant-NGP use it for the Blender scenes)."""


@dataclass
class RayBank:
    """All training rays: ``origins, directions [N, 3]`` (world metres, unit directions), ``colors [N, 3]``
    uint8, ``alpha [N]`` uint8 or None, ``z_per_unit [N]``; the images are ``height x width`` each, ray
    ``i`` of image ``i // (height * width)``."""

    origins: Tensor
    directions: Tensor
    colors: Tensor
    alpha: Tensor | None
    z_per_unit: Tensor
    height: int
    width: int

    def __len__(self) -> int:
        return len(self.origins)

    def targets(self, index: Tensor, background: Tensor) -> Tensor:
        """``[B, 3]`` float colours of rays ``index [B]`` composited over ``background [B, 3]`` or ``[3]``."""
        rgb = self.colors[index].float() / 255.0
        if self.alpha is None:
            return rgb
        alpha = self.alpha[index].float()[:, None] / 255.0
        return rgb * alpha + background * (1.0 - alpha)


def background_colors(kind: str, count: int, generator=None) -> Tensor:
    """``[count, 3]`` background colours of a batch: ``white``, ``black`` or ``random`` (uniform per ray)."""
    if kind == "white":
        return torch.ones(count, 3)
    if kind == "black":
        return torch.zeros(count, 3)
    if kind == "random":
        return torch.rand(count, 3, generator=generator)
    raise ValueError(f"background must be one of {BACKGROUNDS}, got {kind!r}")


def capture_cameras(capture: Capture, frames: list[int] | None = None) -> list[CameraFrame]:
    """The camera images of ``frames`` (default: all) in frame order."""
    chosen = capture.frames if frames is None else [capture.frames[i] for i in frames]
    cameras = [camera for frame in chosen for camera in frame.cameras.values()]
    if not cameras:
        raise CaptureError(f"{capture.source or 'capture'}: no camera images to train on")
    return cameras


def rays_from_cameras(cameras: list[CameraFrame]) -> RayBank:
    """Load the images of ``cameras`` (all of one size) and build their rays."""
    sizes = {(c.height, c.width) for c in cameras}
    if len(sizes) != 1:
        raise CaptureError(f"the training images must share one size, got {sorted(sizes)}")
    height, width = sizes.pop()
    images = np.stack([c.load_image_uint8() for c in cameras])  # [C, H, W, 3 or 4]
    if images.shape[-1] not in (3, 4):
        raise CaptureError(f"images must be RGB or RGBA, got {images.shape[-1]} channels")
    K = torch.from_numpy(np.stack([c.K for c in cameras])).float()
    cam2world = torch.from_numpy(np.stack([c.cam2world for c in cameras])).float()
    rays = generate_rays(K, cam2world, height, width)
    pixels = torch.from_numpy(images).reshape(-1, images.shape[-1])
    return RayBank(origins=rays.origins.reshape(-1, 3).contiguous(), directions=rays.directions.reshape(-1, 3),
                   colors=pixels[:, :3].contiguous(), alpha=pixels[:, 3].contiguous() if pixels.shape[1] == 4 else None,
                   z_per_unit=rays.z_per_unit.reshape(-1), height=height, width=width)


def scene_box(capture: Capture, padding: float = 0.1) -> tuple[float, ...]:
    """A box for the field: the Blender scenes' ``[-1.5, 1.5]^3``; else the box around the capture's sparse
    points (2nd-98th percentile), or around the camera centres, padded by ``padding`` of its size."""
    if capture.source_format == "blender":
        return BLENDER_BOX
    xyz = getattr(capture.points3d, "xyz", None)  # COLMAP's points3D (SparsePoints), when the capture has them
    if xyz is not None and len(xyz) >= 10:
        low, high = np.percentile(xyz, 2, axis=0), np.percentile(xyz, 98, axis=0)
    else:
        centres = np.stack([c.cam2world[:3, 3] for c in capture.camera_frames()])
        low, high = centres.min(0), centres.max(0)
    size = np.maximum(high - low, 1e-3)
    low, high = low - padding * size, high + padding * size
    return tuple(float(v) for v in (*low, *high))
