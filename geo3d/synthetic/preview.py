"""A picture of one frame: the six camera images and a bird's-eye view of its semantic occupancy."""

from __future__ import annotations

import numpy as np

from geo3d.structures.capture import Frame
from geo3d.synthetic.classes import CLASS_NAMES, CLASS_PALETTE

CAMERA_LAYOUT = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"), ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"))
"""Rows of the camera mosaic (as nuScenes' devkit shows them)."""


def occupancy_bev(semantics: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Bird's-eye view ``[X, Y, 3]`` uint8 of a semantic grid ``[X, Y, Z]`` (ego frame): each column
    takes the colour of its highest occupied voxel, darkened with depth below the top layer; free
    columns are black, and voxels outside ``mask [X, Y, Z]`` (unobserved) are drawn at 40 %.
    Rows run from +x (ego forward) at the top, columns from +y (left) at the left."""
    occupied = semantics > 0
    depth = semantics.shape[2]
    top = np.where(occupied.any(axis=2), depth - 1 - np.argmax(occupied[:, :, ::-1], axis=2), -1)
    index = np.clip(top, 0, depth - 1)
    labels = np.take_along_axis(semantics, index[..., None], axis=2)[..., 0]
    shade = np.where(top >= 0, 0.55 + 0.45 * (top + 1) / depth, 0.0)
    if mask is not None:
        seen = np.take_along_axis(mask, index[..., None], axis=2)[..., 0]
        shade = np.where(seen, shade, 0.4 * shade)
    image = CLASS_PALETTE[np.where(top >= 0, labels, 0)] * shade[..., None]
    return np.round(image[::-1, ::-1]).astype(np.uint8)


def frame_preview(frame: Frame, bev_scale: int = 2) -> np.ndarray:
    """``[H, W, 3]`` uint8: the camera mosaic of :data:`CAMERA_LAYOUT` with the occupancy BEV (and
    a class legend) to its right; needs the six cameras and the frame's occupancy."""
    from PIL import Image, ImageDraw

    rows = [np.concatenate([frame.cameras[name].load_image_uint8()[..., :3] for name in row], axis=1)
            for row in CAMERA_LAYOUT]
    mosaic = np.concatenate(rows, axis=0)
    if frame.occupancy is None:
        raise ValueError("the frame has no occupancy ground truth")
    occ = frame.occupancy
    bev = occupancy_bev(occ.load_semantics(), occ.load_mask("camera"))
    bev = np.kron(bev, np.ones((bev_scale, bev_scale, 1), dtype=np.uint8))
    cx, cy = bev.shape[0] // 2, bev.shape[1] // 2
    bev[cx - 4:cx + 4, cy - 2:cy + 2] = 255  # the ego
    height = max(mosaic.shape[0], bev.shape[0])
    legend_width = 150
    canvas = np.full((height, mosaic.shape[1] + bev.shape[1] + legend_width, 3), 255, dtype=np.uint8)
    canvas[:mosaic.shape[0], :mosaic.shape[1]] = mosaic
    canvas[:bev.shape[0], mosaic.shape[1]:mosaic.shape[1] + bev.shape[1]] = bev
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    x0 = mosaic.shape[1] + bev.shape[1] + 8
    for k, name in enumerate(CLASS_NAMES[1:], start=1):
        y = 6 + 16 * (k - 1)
        draw.rectangle([x0, y, x0 + 12, y + 12], fill=tuple(int(c) for c in CLASS_PALETTE[k]), outline=(0, 0, 0))
        draw.text((x0 + 18, y), name, fill=(0, 0, 0))
    return np.asarray(image)
