"""A shape-classification set from the street scenes' own object models (offline ModelNet stand-in).

Each shape is one procedural object (a car, a bus, a pedestrian, a tree, ...) drawn with its own
seed, its surface sampled uniformly by area with outward normals. Points that fall inside another
part of the same object (where parts overlap, e.g. a wheel inside a body, or touch, e.g. a cabin
standing on a body) are dropped, so the cloud is the object's outer surface. Train and test draw disjoint instance seeds, so the test split holds
instances never seen in training. Clouds are centred at their mean and scaled into the unit sphere
(ModelNet / PointNet convention), as :func:`geo3d.structures.shapes.normalize_unit_sphere` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from geo3d.structures.shapes import ShapeSet, normalize_unit_sphere, sample_surface
from geo3d.synthetic.objects import MODELS
from geo3d.synthetic.primitives import ObjectModel

SHAPE_CLASSES: tuple[str, ...] = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "traffic_cone",
    "trailer", "truck", "tree", "bush", "street_lamp", "traffic_sign", "traffic_light", "bus_shelter",
)  # fmt: skip
"""The model kinds of the shape set, in label order."""

SPLITS = {"train": 0, "test": 1}

STEP_M = 1e-4
"""A surface point whose step of this length along its outward normal lands inside another part
lies on an internal face (where two parts touch) and is dropped."""


def _outward_planes(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals ``[F, 3]`` pointing away from the (convex) part's centroid, and offsets ``[F]``."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-18)
    centre = vertices.mean(axis=0)
    flip = ((a - centre) * normals).sum(axis=1) < 0
    normals[flip] *= -1.0
    return normals, (normals * a).sum(axis=1)


def object_surface_points(model: ObjectModel, count: int, rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points ``[count, 3]`` on the outer surface of ``model`` (local frame, metres) with
    outward unit normals ``[count, 3]``; uniform by area over the union's surface."""
    vertices = np.concatenate([p.vertices for p in model.parts])
    offsets = np.cumsum([0] + [len(p.vertices) for p in model.parts])
    faces = np.concatenate([p.faces + o for p, o in zip(model.parts, offsets)])
    part_of_face = np.repeat(np.arange(len(model.parts)), [len(p.faces) for p in model.parts])
    planes = [_outward_planes(p.vertices, p.faces) for p in model.parts]
    kept_points, kept_normals, total = [], [], 0
    for _ in range(20):
        points, _, face = sample_surface(vertices, faces, 2 * count, rng, return_faces=True)
        normals = np.concatenate([pl[0] for pl in planes])[face]  # outward, whatever the winding
        part = part_of_face[face]
        stepped = points + STEP_M * normals  # catches faces where two parts touch (coplanar)
        inside_other = np.zeros(len(points), dtype=bool)
        for k, (n, offset) in enumerate(planes):
            others = part != k
            inside_other |= others & ((points @ n.T - offset).max(axis=1) < -1e-9)
            inside_other |= others & ((stepped @ n.T - offset).max(axis=1) < 0.0)
        kept_points.append(points[~inside_other])
        kept_normals.append(normals[~inside_other])
        total += int((~inside_other).sum())
        if total >= count:
            break
    points, normals = np.concatenate(kept_points)[:count], np.concatenate(kept_normals)[:count]
    if len(points) < count:
        raise RuntimeError(f"could not sample {count} outer-surface points of a {model.kind}")
    return points, normals


def make_shape_set(split: str = "train", per_class: int = 50, num_points: int = 1024, seed: int = 0,
                   classes: tuple[str, ...] = SHAPE_CLASSES,
                   progress: Callable[[Iterable[int]], Iterable[int]] | None = None) -> ShapeSet:
    """Sample ``per_class`` shapes of each of ``classes`` (model kinds of
    :data:`geo3d.synthetic.objects.MODELS`), ``num_points`` points with normals each.

    Shape ``i`` of class ``c`` in ``split`` is drawn with ``numpy.random.default_rng([seed, split,
    c, i])`` (split 0 = train, 1 = test), so the two splits hold different instances and the set is
    the same on every machine. Clouds are normalised into the unit sphere. ``progress`` may wrap
    the loop over the ``per_class * len(classes)`` shapes (e.g. tqdm).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    unknown = [c for c in classes if c not in MODELS]
    if unknown:
        raise ValueError(f"unknown shape classes {unknown}; expected model kinds among {', '.join(MODELS)}")
    if per_class < 1 or num_points < 1:
        raise ValueError("per_class and num_points must be >= 1")
    points, normals, labels, names = [], [], [], []
    shapes: Iterable[int] = range(per_class * len(classes))
    for index in progress(shapes) if progress is not None else shapes:
        label, i = divmod(index, per_class)
        kind = classes[label]
        rng = np.random.default_rng([seed, SPLITS[split], label, i])
        p, n = object_surface_points(MODELS[kind](rng), num_points, rng)
        points.append(p)
        normals.append(n)
        labels.append(label)
        names.append(f"{kind}/{split}_{i:04d}")
    clouds, _, _ = normalize_unit_sphere(np.stack(points))
    return ShapeSet(points=clouds.astype(np.float32), normals=np.stack(normals).astype(np.float32),
                    labels=np.array(labels, dtype=np.int64), class_names=tuple(classes), names=tuple(names),
                    split=split, metadata={"source": "geo3d.synthetic.make_shape_set", "seed": int(seed),
                                           "per_class": int(per_class), "num_points": int(num_points),
                                           "normalized": "unit_sphere"})
