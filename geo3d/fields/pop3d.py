"""``pop3d``: the feed-forward open-vocabulary occupancy network (:class:`~geo3d.occupancy.OccupancyNet`,
POP-3D style) run on the images of one frame, made into a field.

- Input: the frame's camera images resized to the network's input size, intrinsics scaled with them,
  ``cam2ego`` poses. LiDAR is not read (the network was trained with LiDAR targets; at inference it
  needs images only).
- Occupancy: ``sigmoid(logit - threshold)`` per voxel of the network's output grid, with the
  checkpoint's calibrated logit threshold (chosen on validation scenes by ``geo3d train occupancy``),
  so that the field's default occupancy threshold 0.5 is the calibrated decision.
- Features: the language head at the centres of the occupied voxels that a camera sees first (one
  ray per second pixel of the network's input, cast through the predicted occupancy:
  ``features_on="visible"``, default), of the occupied voxels on a surface (a free 6-neighbour,
  ``"surface"``) or of every occupied voxel (``"all"``). The network fills the inside of solid objects
  and space no sensor saw; the visible voxels are what the language head was trained on (features at
  LiDAR returns, i.e. seen surfaces), what a viewer shows and what queries should find, at a fraction
  of the file size (~20x fewer than all occupied voxels).
- Colours: each feature voxel's centre projected into the camera where it lies nearest to the image
  centre (no occlusion test: hidden voxels take the colour of what hides them).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geo3d.cameras.functional import world_to_pixels
from geo3d.fields.fusion import class_labels
from geo3d.fields.inputs import check_frame, frame_at
from geo3d.fields.methods import Progress, ReconstructionMethod, register_method
from geo3d.geometry.poses import invert_pose
from geo3d.occupancy.lifting import scale_intrinsics
from geo3d.occupancy.samples import resize_image, select_views
from geo3d.structures.capture import Capture, Frame
from geo3d.structures.field import FieldError, OpenVocabField

FEATURES_ON = ("visible", "surface", "all")


@dataclass
class Pop3dOptions:
    """Settings of the ``pop3d`` method (module docstring)."""

    threshold: float | None = None
    """Occupancy-logit threshold (occupied above it); default: the checkpoint's calibrated one (else 0)."""
    features_on: str = "visible"
    """Voxels that get a language feature: ``"visible"`` (the first occupied voxel along camera rays),
    ``"surface"`` (occupied with a free 6-neighbour) or ``"all"`` occupied voxels."""
    ray_stride: int = 2
    """``"visible"``: one ray per ``ray_stride``-th pixel of the network's input images."""
    feature_dtype: str = "float16"
    """Stored feature precision: ``"float16"`` or ``"float32"``."""


    def check(self) -> None:
        """Raise :class:`FieldError` naming the first bad option."""
        if self.features_on not in FEATURES_ON:
            raise FieldError(f"features_on must be one of {', '.join(FEATURES_ON)}, got {self.features_on!r}")
        if self.feature_dtype not in ("float16", "float32"):
            raise FieldError(f"feature_dtype must be 'float16' or 'float32', got {self.feature_dtype!r}")
        if int(self.ray_stride) < 1:
            raise FieldError(f"ray_stride must be >= 1, got {self.ray_stride}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise FieldError(f"threshold must be finite, got {self.threshold}")


def network_inputs(frame: Frame, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images [C, 3, H, W] in [0, 1], K [C, 3, 3] scaled to (H, W), cam2ego [C, 4, 4])``, float32,
    of the frame's cameras in their order (``image_size = (H, W)``)."""
    cameras = list(frame.cameras.values())
    world2ego = invert_pose(np.asarray(frame.ego2world, np.float64))
    images = torch.stack([resize_image(cam.load_image_uint8(), image_size) for cam in cameras])
    K = torch.stack([scale_intrinsics(torch.from_numpy(np.asarray(cam.K, np.float64)), (cam.height, cam.width),
                                      image_size) for cam in cameras])
    cam2ego = torch.from_numpy(np.stack([world2ego @ np.asarray(cam.cam2world, np.float64) for cam in cameras]))
    return images, K.float(), cam2ego.float()


def surface_mask(occupied: torch.Tensor) -> torch.Tensor:
    """``[X, Y, Z]`` bool: occupied voxels with at least one free 6-neighbour (outside the grid counts as free)."""
    padded = F.pad(occupied[None, None].float(), (1, 1, 1, 1, 1, 1), value=0.0)[0, 0]
    X, Y, Z = occupied.shape
    inner = torch.ones_like(occupied)
    for axis in range(3):
        for shift in (0, 2):
            sl = [slice(1, X + 1), slice(1, Y + 1), slice(1, Z + 1)]
            sl[axis] = slice(shift, shift + occupied.shape[axis])
            inner &= padded[tuple(sl)] > 0.5
    return occupied & ~inner


def visible_voxels(occupied: torch.Tensor, spec, K: torch.Tensor, cam2ego: torch.Tensor,
                   image_size: tuple[int, int], stride: int = 2) -> torch.Tensor:
    """``[X, Y, Z]`` bool: the occupied voxels a camera sees first, found by casting one ray per
    ``stride``-th pixel of every camera through the occupancy (exact traversal of an octree over the
    occupied voxels, :meth:`geo3d.voxels.Octree.ray_first_hit`).

    Args:
        occupied: ``[X, Y, Z]`` bool occupancy on ``spec`` (an ``OccupancyGridSpec``, ego frame).
        K: ``[C, 3, 3]`` intrinsics at ``image_size = (H, W)``; cam2ego: ``[C, 4, 4]`` poses (OpenCV axes).
        stride: pixel step of the rays.
    """
    from geo3d.cameras.functional import generate_rays
    from geo3d.voxels.octree import Octree

    visible = torch.zeros_like(occupied)
    index = torch.nonzero(occupied)
    if len(index) == 0:
        return visible
    height, width = (max(1, s // stride) for s in image_size)
    K_rays = scale_intrinsics(K.double(), image_size, (height, width))
    rays = generate_rays(K_rays, cam2ego.double(), height, width)
    tree = Octree.from_voxel_indices(index, torch.tensor(spec.lower, dtype=torch.float64), spec.voxel_size)
    hits = tree.ray_first_hit(rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)).leaf_indices
    leaves = tree.node_coords()[hits[hits >= 0]].long()
    visible[leaves[:, 0], leaves[:, 1], leaves[:, 2]] = True
    return visible & occupied


def voxel_colors(frame: Frame, centers_ego: torch.Tensor, min_depth: float = 0.1) -> np.ndarray:
    """``[M, 3]`` uint8 colour of each voxel centre ``[M, 3]`` (ego frame, metres): the pixel of the camera
    where it projects nearest to the image centre; grey (128) where no camera sees it."""
    cameras = list(frame.cameras.values())
    ego2world = torch.from_numpy(np.asarray(frame.ego2world, np.float64))
    points = centers_ego.double() @ ego2world[:3, :3].T + ego2world[:3, 3]
    Ks = torch.from_numpy(np.stack([np.asarray(c.K, np.float64) for c in cameras]))
    cam2world = torch.from_numpy(np.stack([np.asarray(c.cam2world, np.float64) for c in cameras]))
    projection = world_to_pixels(points, Ks, cam2world)
    sizes = [(int(c.height), int(c.width)) for c in cameras]
    seen, choice = select_views(projection.uv, projection.depth, sizes, min_depth)
    colors = np.full((len(points), 3), 128, np.uint8)
    for c, cam in enumerate(cameras):
        rows = torch.nonzero(seen & (choice == c)).squeeze(1)
        if len(rows) == 0:
            continue
        pixel = projection.uv[c, rows].round().long()
        image = np.asarray(cam.load_image_uint8())[..., :3]
        colors[rows.numpy()] = image[pixel[:, 1].clamp(0, cam.height - 1).numpy(),
                                     pixel[:, 0].clamp(0, cam.width - 1).numpy()]
    return colors


@register_method
class Pop3dMethod(ReconstructionMethod):
    name = "pop3d"
    summary = "the feed-forward occupancy + language network (POP-3D style) from the images of one frame"
    Options = Pop3dOptions
    needs = ("checkpoint",)

    def __init__(self, options=None, resources=None) -> None:
        super().__init__(options, resources)
        self._net = self._checkpoint = None

    def load(self):
        """``(net, checkpoint)`` from ``resources.checkpoint`` (loaded once)."""
        if self._net is None:
            from geo3d.occupancy.training import load_occupancy_net

            path = self.resources.checkpoint
            if path is None:
                raise FieldError("method 'pop3d' needs a network checkpoint (Resources.checkpoint)")
            if not Path(path).is_file():
                raise FieldError(f"checkpoint {path} does not exist (train one with 'geo3d train occupancy')")
            net, self._checkpoint = load_occupancy_net(path, map_location=self.resources.device)
            # load_occupancy_net builds the net on the CPU (map_location only places the loaded tensors)
            self._net = net.to(self.resources.device)
        return self._net, self._checkpoint

    def reconstruct(self, capture: Capture, frame_index: int = 0, progress: Progress | None = None
                    ) -> OpenVocabField:
        options = self.options
        options.check()
        frame = frame_at(capture, frame_index)
        check_frame(frame)
        net, checkpoint = self.load()
        encoder = self.resources.text_encoder
        space = checkpoint.extra.get("text_space")
        if encoder is not None and space is not None and encoder.space != space:
            raise FieldError(f"the checkpoint's language features live in space {space!r} but the text encoder's "
                             f"in {encoder.space!r}: use --text-encoder {checkpoint.extra.get('text_encoder')!r}")
        threshold = options.threshold
        if threshold is None:
            threshold = float(checkpoint.extra.get("threshold", 0.0))
        start = time.perf_counter()

        def step(done: int) -> None:  # 4 steps: inputs, network, feature voxels, features and colours
            if progress is not None:
                progress("pop3d", done, 4)

        images, K, cam2ego = network_inputs(frame, net.config.image_size)
        step(1)
        device = self.resources.device
        with torch.no_grad():
            out = net(images[None].to(device), K[None].to(device), cam2ego[None].to(device))
            logits = out.occupancy_logits[0].cpu()
            step(2)
            occupied = logits > threshold
            chosen = occupied
            if options.features_on == "visible":
                chosen = visible_voxels(occupied, net.config.output_grid, K, cam2ego, net.config.image_size,
                                        options.ray_stride)
            elif options.features_on == "surface":
                chosen = surface_mask(occupied)
            step(3)
            features = net.dense_language_features(out, chosen[None].to(device)).cpu().float()
        spec = net.config.output_grid
        index = torch.nonzero(chosen)
        centers = torch.tensor(spec.lower) + (index.double() + 0.5) * spec.voxel_size
        features = F.normalize(features, dim=1, eps=1e-12)
        occupancy = torch.sigmoid(logits.double() - threshold).float().numpy()
        metadata = {
            "method": self.name, "capture": capture.source, "capture_format": capture.source_format,
            "frame": int(frame_index), "ego2world": np.asarray(frame.ego2world, np.float64).tolist(),
            "timestamp": frame.timestamp, "text_encoder": checkpoint.extra.get("text_encoder", "minilm"),
            "checkpoint": str(self.resources.checkpoint), "threshold_logit": threshold,
            "options": self.options_dict(), "cameras": list(frame.cameras),
        }
        colors = voxel_colors(frame, centers.float())
        step(4)
        metadata["seconds"] = round(time.perf_counter() - start, 3)
        return OpenVocabField(origin=spec.lower, voxel_size=spec.voxel_size, frame="ego", occupancy=occupancy,
                              indices=index.numpy(), features=features.numpy().astype(options.feature_dtype),
                              space=space or (encoder.space if encoder is not None else "unknown"),
                              colors=colors,
                              labels=class_labels(features, encoder) if encoder is not None else None,
                              metadata=metadata)
