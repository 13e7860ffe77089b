"""A multi-camera rig on a moving body: :class:`CameraRig` (intrinsics plus ``cam2ego`` extrinsics).

Conventions (``docs/conventions.md``): ``cam2ego`` maps camera-frame points (OpenCV axes) into the
ego (vehicle/rig body) frame, ``ego2world`` maps the ego frame into the world, so
``cam2world = ego2world @ cam2ego``. Metres throughout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from geo3d.cameras.cameras import PinholeCameras, check_camera_batch, common_image_size
from geo3d.geometry.poses import invert_pose
from geo3d.structures.capture import Frame


@dataclass(frozen=True, eq=False)
class CameraRig:
    """C cameras rigidly mounted on one body, sharing one image size.

    Attributes:
        names: camera names, one per camera (e.g. ``("CAM_FRONT", ...)``).
        K: ``[C, 3, 3]`` intrinsics in pixels.
        cam2ego: ``[C, 4, 4]`` camera-to-ego poses (rig extrinsics); same dtype/device as ``K``.
        width, height: image size in pixels.
    """

    names: tuple[str, ...]
    K: Tensor
    cam2ego: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.names is None:
            raise ValueError("CameraRig: names must be a sequence of camera names, got None")
        check_camera_batch("CameraRig", self.K, self.cam2ego, "cam2ego", self.width, self.height, self.names)
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_numpy(
        cls,
        names: Sequence[str],
        K,
        cam2ego,
        width: int,
        height: int,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> CameraRig:
        """From arrays ``K [C, 3, 3]`` and ``cam2ego [C, 4, 4]``."""
        return cls(
            tuple(names),
            torch.as_tensor(np.asarray(K, dtype=np.float64), dtype=dtype, device=device),
            torch.as_tensor(np.asarray(cam2ego, dtype=np.float64), dtype=dtype, device=device),
            width,
            height,
        )

    @classmethod
    def from_frame(cls, frame: Frame, dtype: torch.dtype = torch.float32, device=None) -> CameraRig:
        """Rig of the cameras of one :class:`~geo3d.structures.capture.Frame`, in its dict order.

        ``cam2ego = inv(ego2world) @ cam2world``, computed in float64 before the cast to ``dtype``.

        Raises:
            ValueError: the frame has no ``ego2world``, no camera, or cameras of different sizes.
        """
        if frame.ego2world is None:
            raise ValueError(
                f"frame {frame.index} has no ego2world: cannot derive the rig extrinsics cam2ego"
            )
        camera_frames = list(frame.cameras.values())
        if not camera_frames:
            raise ValueError(f"frame {frame.index} has no cameras")
        width, height = common_image_size(camera_frames)
        world2ego = invert_pose(np.asarray(frame.ego2world, dtype=np.float64))
        cam2ego = np.stack([world2ego @ np.asarray(cam.cam2world, dtype=np.float64) for cam in camera_frames])
        K = np.stack([cam.K for cam in camera_frames])
        return cls.from_numpy(list(frame.cameras), K, cam2ego, width, height, dtype=dtype, device=device)

    def __len__(self) -> int:
        return len(self.names)

    def to(self, device=None, dtype: torch.dtype | None = None) -> CameraRig:
        """Copy on another device and/or floating dtype."""
        return dataclasses.replace(
            self, K=self.K.to(device=device, dtype=dtype), cam2ego=self.cam2ego.to(device=device, dtype=dtype)
        )

    def cameras_at(self, ego2world) -> PinholeCameras:
        """The rig's cameras at one or several body poses.

        Args:
            ego2world: ``[4, 4]`` or ``[B, 4, 4]`` ego-to-world pose(s) (tensor or array; cast to the
                rig's dtype and device, gradients flow through tensors).

        Returns:
            :class:`PinholeCameras` with ``cam2world = ego2world @ cam2ego``: C cameras for one pose,
            ``B * C`` for B poses in pose-major order (camera ``c`` at pose ``b`` is index
            ``b * C + c``; names repeat per pose).
        """
        ego2world = torch.as_tensor(ego2world).to(dtype=self.K.dtype, device=self.K.device)
        if ego2world.shape[-2:] != (4, 4) or ego2world.ndim not in (2, 3):
            raise ValueError(f"ego2world must have shape [4, 4] or [B, 4, 4], got {list(ego2world.shape)}")
        poses = ego2world.reshape(-1, 4, 4)
        num_poses = poses.shape[0]
        cam2world = (poses[:, None] @ self.cam2ego[None]).reshape(-1, 4, 4)
        K = self.K.repeat(num_poses, 1, 1)
        return PinholeCameras(K, cam2world, self.width, self.height, self.names * num_poses)

    def __repr__(self) -> str:
        return f"CameraRig({list(self.names)}, {self.width}x{self.height}, {self.K.dtype}, {self.K.device})"
