"""Torch datasets of occupancy training samples (:class:`~geo3d.occupancy.samples.OccupancySample`).

- :class:`SyntheticOccupancyDataset`: street scenes of :mod:`geo3d.synthetic` generated on the fly,
  one scene per seed, ``synth_config.frames`` frames each; item ``i`` is frame ``i % frames`` of seed
  ``seeds[i // frames]``. The same seed and config give the same sample (the generator is
  deterministic and the teachers' degradation is seeded by the image content).
- :class:`CaptureOccupancyDataset`: captures in memory or on disk (any path
  :func:`geo3d.io.read_capture` reads, e.g. a geo3d capture folder or a nuScenes info pickle); item
  ``i`` runs over the frames of every capture in turn.

Both pass ``cache_dir`` to a :class:`~geo3d.language.cache.FeatureCache`, so the teacher runs once
per (capture, frame, camera). Use :func:`~geo3d.occupancy.samples.collate_samples` as the
``DataLoader``'s ``collate_fn``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch.utils.data

from geo3d.occupancy.lifting import check_image_size
from geo3d.occupancy.samples import OccupancySample, _check_grid_spec, check_teacher, make_sample
from geo3d.occupancy.targets import OccupancyError
from geo3d.structures.capture import Capture


def _cache(cache_dir):
    if cache_dir is None:
        return None
    from geo3d.language.cache import FeatureCache

    return FeatureCache(cache_dir)


def _image_size(image_size):
    return None if image_size is None else check_image_size(image_size, "image_size")


class SyntheticOccupancyDataset(torch.utils.data.Dataset):
    """Occupancy samples of synthetic street captures generated on the fly from their seeds.

    Args:
        seeds: the scene seeds (each replaces ``synth_config.seed``), a non-empty sequence of ints.
        synth_config: a :class:`~geo3d.synthetic.SynthConfig` (size, frames, LiDAR, ground-truth
            grid); keep ``frames`` small, each item renders one frame.
        grid_spec: the occupancy grid of the targets; None uses ``synth_config.grid_spec()``. With
            ``with_ground_truth`` it must equal the config's grid.
        teacher: a dense teacher (:func:`~geo3d.occupancy.samples.teacher_inputs`).
        image_size: ``(H, W)`` network input size, or None for the rendered size.
        cache_dir: folder of a :class:`~geo3d.language.cache.FeatureCache`, or None.
        with_ground_truth: add the occupancy ground truth, camera visibility and LiDAR labels.
        scene_cache_size: scenes kept in memory (building one costs about a second).
        **sample_options: passed to :func:`~geo3d.occupancy.samples.make_sample` (``feature_dim``,
            ``min_depth``, ``max_range``, ``min_hits``).
    """

    def __init__(self, seeds: Sequence[int], synth_config, grid_spec, teacher, image_size, cache_dir=None, *,
                 with_ground_truth: bool = True, scene_cache_size: int = 2, **sample_options) -> None:
        from geo3d.synthetic.generate import SynthConfig

        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
            raise OccupancyError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
        for i, seed in enumerate(seeds):
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise OccupancyError(f"seeds[{i}] must be an int, got {seed!r}")
        if not isinstance(synth_config, SynthConfig):
            raise OccupancyError(f"synth_config must be a SynthConfig, got {type(synth_config).__name__}")
        self.seeds = tuple(int(s) for s in seeds)
        self.synth_config = synth_config
        self.grid_spec = synth_config.grid_spec() if grid_spec is None else _check_grid_spec(grid_spec)
        self.teacher = None if teacher is None else check_teacher(teacher, sample_options.get("feature_dim"))
        self.image_size = _image_size(image_size)
        self.cache = _cache(cache_dir)
        self.with_ground_truth = bool(with_ground_truth)
        if isinstance(scene_cache_size, bool) or not isinstance(scene_cache_size, int) or scene_cache_size < 1:
            raise OccupancyError(f"scene_cache_size must be a positive int, got {scene_cache_size!r}")
        self.scene_cache_size = scene_cache_size
        self.sample_options = sample_options
        self._scenes: OrderedDict[int, tuple] = OrderedDict()

    def __len__(self) -> int:
        return len(self.seeds) * self.synth_config.frames

    def config_of(self, seed: int):
        """The :class:`SynthConfig` of one seed."""
        return replace(self.synth_config, seed=int(seed))

    def _scene(self, seed: int):
        from geo3d.synthetic.generate import capture_metadata, make_scene

        if seed in self._scenes:
            self._scenes.move_to_end(seed)
            return self._scenes[seed]
        config = self.config_of(seed)
        scene = make_scene(config)
        entry = (config, scene, capture_metadata(config, scene))
        self._scenes[seed] = entry
        while len(self._scenes) > self.scene_cache_size:
            self._scenes.popitem(last=False)
        return entry

    def frame_capture(self, index: int) -> Capture:
        """A one-frame :class:`Capture` holding item ``index``'s frame (with the full capture's
        metadata, so its id is that of the whole generated capture)."""
        from geo3d.synthetic.generate import WORLD_FRAME, synthesize_frame

        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise IndexError(f"index must be an int in [0, {len(self)}), got {index!r}")
        seed = self.seeds[int(index) // self.synth_config.frames]
        frame_index = int(index) % self.synth_config.frames
        config, scene, metadata = self._scene(seed)
        frame = synthesize_frame(scene, frame_index, config)
        return Capture([frame], source_format="synthetic", world_frame=WORLD_FRAME, metadata=dict(metadata))

    def __getitem__(self, index: int) -> OccupancySample:
        return make_sample(self.frame_capture(index), 0, self.grid_spec, self.teacher, image_size=self.image_size,
                           cache=self.cache, with_ground_truth=self.with_ground_truth, **self.sample_options)


class CaptureOccupancyDataset(torch.utils.data.Dataset):
    """Occupancy samples of every frame of captures in memory or on disk.

    Args:
        captures: :class:`Capture` objects and/or paths read by :func:`geo3d.io.read_capture`
            (pixels and points are decoded per item; only the metadata is read here).
        grid_spec: the occupancy grid of the targets (ego frame).
        teacher: a dense teacher (:func:`~geo3d.occupancy.samples.teacher_inputs`).
        image_size: ``(H, W)`` network input size, or None (then every camera must have one size).
        cache_dir: folder of a :class:`~geo3d.language.cache.FeatureCache`, or None.
        with_ground_truth: add ground truth where the captures have it.
        read_options: keyword arguments of :func:`geo3d.io.read_capture` (e.g. ``{"format": "geo3d"}``).
        **sample_options: passed to :func:`~geo3d.occupancy.samples.make_sample`.
    """

    def __init__(self, captures: Sequence, grid_spec, teacher, image_size, cache_dir=None, *,
                 with_ground_truth: bool = True, read_options: dict | None = None, **sample_options) -> None:
        if isinstance(captures, (str, Path, Capture)) or not isinstance(captures, Sequence) or len(captures) == 0:
            raise OccupancyError(f"captures must be a non-empty sequence of Capture objects or paths, got {captures!r}")
        self.grid_spec = _check_grid_spec(grid_spec)
        self.teacher = None if teacher is None else check_teacher(teacher, sample_options.get("feature_dim"))
        self.image_size = _image_size(image_size)
        self.cache = _cache(cache_dir)
        self.with_ground_truth = bool(with_ground_truth)
        self.sample_options = sample_options
        loaded = []
        for i, item in enumerate(captures):
            if isinstance(item, Capture):
                loaded.append(item)
            elif isinstance(item, (str, Path)):
                from geo3d.io import read_capture

                loaded.append(read_capture(item, **(read_options or {})))
            else:
                raise OccupancyError(f"captures[{i}] must be a Capture or a path, got {type(item).__name__}")
            if not loaded[-1].frames:
                raise OccupancyError(f"captures[{i}] has no frames")
        self.captures = loaded
        self._index = [(c, f) for c, capture in enumerate(loaded) for f in range(len(capture.frames))]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> OccupancySample:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self):
            raise IndexError(f"index must be an int in [0, {len(self)}), got {index!r}")
        c, f = self._index[int(index)]
        return make_sample(self.captures[c], f, self.grid_spec, self.teacher, image_size=self.image_size,
                           cache=self.cache, with_ground_truth=self.with_ground_truth, **self.sample_options)
