"""Data structures shared across geo3d: the multi-camera :class:`Capture` and its parts."""

from geo3d.structures.capture import ArraySource, CameraFrame, Capture, Frame, LidarSweep, SparsePoints

__all__ = ["ArraySource", "CameraFrame", "Capture", "Frame", "LidarSweep", "SparsePoints"]
