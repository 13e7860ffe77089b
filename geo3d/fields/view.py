"""Pictures of an :class:`~geo3d.structures.OpenVocabField`: camera presets, what is shown and in which
colours, a colour bar / class legend, and headless rendering with Open3D's offscreen renderer.

What is shown: the feature voxels whose occupancy is ``>= occupancy_threshold`` (as
:meth:`OpenVocabField.to_points`), as points (voxel centres) or as cubes (only the faces between a
shown voxel and a hidden one, shaded by face direction so the unlit picture keeps its relief).
Colours (:data:`COLOR_MODES`): ``"rgb"`` the field's colours, ``"class"`` the class palette
(:func:`~geo3d.structures.field.class_colors`), ``"height"`` viridis of the voxel centre's z, and
``"relevance"``: the voxels that answer a query (``selected``, by default ``relevance >= threshold``)
in viridis over ``value_range`` (dark purple = low, yellow = high), every other voxel dimmed to grey
(a light grey whose brightness follows the voxel's own RGB a little, when the field has colours) so
that a query visibly lights up its answer.

Camera presets (:data:`CAMERA_PRESETS`) assume the field's frame has z up (the ego frame: x forward,
y left, z up, metres) and are computed from the grid's bounds, so a picture does not move when the
query changes. :class:`CameraView` projects with geo3d's OpenCV pinhole conventions
(``docs/conventions.md``); its ``fov_deg`` is the vertical field of view.

Rendering needs Open3D (``geo3d.utils.optional.require``), unlit and without post-processing so that
pixels have exactly the colours above; ``EGL_PLATFORM=surfaceless`` is set (when
unset) before Open3D is imported so that no display is needed. One renderer is kept per process and
reused while the image size stays the same (first picture ~1.5 s, then ~0.1 s on a CPU).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from geo3d.structures.field import FieldError, OpenVocabField, class_colors, relevance_colors
from geo3d.utils.atomic import atomic_write_bytes

COLOR_MODES: tuple[str, ...] = ("rgb", "class", "relevance", "height")
RENDER_MODES: tuple[str, ...] = ("points", "cubes")
CAMERA_PRESETS: dict[str, str] = {
    "bev": "bird's-eye view: straight down from above the grid centre, forward (+x) up in the image, +y left",
    "ego": "chase camera: behind and above the ego origin, looking forward (+x)",
    "oblique": "a 3/4 view of the whole grid from behind-left and above",
}
"""Preset name -> what it shows (see :func:`camera_view`)."""
DIMMED_GREY = 200
"""Grey level (0-255) of the voxels that do not answer a query in ``color_by="relevance"``."""
_FACE_SHADE = (0.72, 0.72, 0.86, 0.86, 0.55, 1.0)  # -x, +x, -y, +y, -z (bottom), +z (top)
# corners of each face of the unit cube (same order), counter-clockwise seen from outside
_FACE_QUADS = np.array([[[0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0]], [[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 1]],
                        [[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]], [[0, 1, 0], [0, 1, 1], [1, 1, 1], [1, 1, 0]],
                        [[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]], [[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]]],
                       dtype=np.float64)


class ViewError(FieldError):
    """A picture that cannot be made: bad option values, nothing to show, no display, renderer failure."""


@dataclass(frozen=True)
class CameraView:
    """A look-at camera in the field's frame.

    Attributes:
        eye: ``[3]`` camera position, metres.
        center: ``[3]`` point the camera looks at, metres.
        up: ``[3]`` direction that appears upwards in the image (not parallel to ``center - eye``).
        fov_deg: vertical field of view, degrees.
    """

    eye: np.ndarray
    center: np.ndarray
    up: np.ndarray
    fov_deg: float

    def world2cam(self) -> np.ndarray:
        """``[4, 4]`` float64 field-frame -> camera (OpenCV axes: x right, y down, z forward)."""
        forward = _unit(self.center - self.eye)
        right = _unit(np.cross(forward, self.up))
        down = np.cross(forward, right)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([right, down, forward])
        pose[:3, 3] = -pose[:3, :3] @ self.eye
        return pose

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """``[3, 3]`` K in pixels of a ``width x height`` image (square pixels, centre ``((W-1)/2, (H-1)/2)``)."""
        focal = 0.5 * height / np.tan(np.radians(self.fov_deg) / 2)
        return np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])

    def project(self, points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``uv [N, 2]`` (column, row) and z-depths ``[N]`` (metres) of ``points [N, 3]`` (field frame)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        cam = points @ self.world2cam()[:3, :3].T + self.world2cam()[:3, 3]
        uvw = cam @ self.intrinsics(width, height).T
        return uvw[:, :2] / uvw[:, 2:3], cam[:, 2]


class FieldColors(NamedTuple):
    """What :func:`field_colors` shows."""

    rows: np.ndarray
    """``[K]`` int64 rows of the shown feature voxels (into ``field.indices``)."""
    rgb: np.ndarray
    """``[K, 3]`` uint8 colour of each shown voxel."""
    color_by: str
    """The colour mode."""
    value_range: tuple[float, float] | None
    """``(low, high)`` of the colour map (``"relevance"``, ``"height"``), else None."""


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-12:
        raise ViewError(f"camera vectors must be non-zero and not parallel, got {np.asarray(vector).tolist()}")
    return np.asarray(vector, dtype=np.float64) / norm


def _check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ViewError(f"unknown {name} {value!r} (choose one of: {', '.join(choices)})")
    return value


def _content_bounds(field: OpenVocabField, occupancy_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` [3] metres: the 3rd..97th percentile box of the shown voxel centres, padded by one
    voxel (the grid's bounds when nothing is shown): scattered far returns do not shrink the scene."""
    index = field.indices[field.occupied_mask(occupancy_threshold)[tuple(field.indices.T.astype(np.int64))]]
    if len(index) == 0:
        return field.origin, field.origin + np.array(field.shape) * field.voxel_size
    centers = field.voxel_centers(index)
    low, high = np.percentile(centers, 3, axis=0), np.percentile(centers, 97, axis=0)
    return low - field.voxel_size, high + field.voxel_size


def camera_view(field: OpenVocabField, preset: str = "oblique", aspect: float = 1.0,
                fov_deg: float = 50.0, fit: str = "grid") -> CameraView:
    """The camera of a preset (:data:`CAMERA_PRESETS`) for ``field``'s grid bounds (z up assumed).

    Args:
        field: the field; its grid spans ``origin .. origin + shape * voxel_size`` (metres).
        preset: ``"bev"`` (eye straight above the grid centre, up vector +x, far enough for the whole
            grid to fit), ``"ego"`` (eye behind and above the ego origin, or the grid centre when the
            frame is not ``"ego"`` or the origin lies outside the grid, looking 40 % of the grid's
            half-size ahead), ``"oblique"`` (the grid's bounding sphere seen from behind-left, above).
        aspect: image width / height (the ``"bev"`` and ``"oblique"`` distances fit both directions).
        fov_deg: vertical field of view, degrees.
        fit: ``"grid"`` frames the whole grid; ``"content"`` frames the shown voxels (3rd..97th
            percentile box of their centres; the oblique view then fits the box's footprint rather than
            its bounding sphere), closer when the scene fills part of the grid.
    """
    _check_choice(preset, tuple(CAMERA_PRESETS), "camera preset")
    _check_choice(fit, ("grid", "content"), "fit")
    if not (np.isfinite(aspect) and aspect > 0 and 1.0 <= fov_deg <= 170.0):
        raise ViewError(f"aspect must be > 0 and fov_deg in [1, 170], got {aspect}, {fov_deg}")
    if fit == "content":
        low, high = _content_bounds(field)
    else:
        low, high = field.origin, field.origin + np.array(field.shape) * field.voxel_size
    center, extent = (low + high) / 2, high - low
    tan_v = np.tan(np.radians(fov_deg) / 2)
    tan_h = tan_v * aspect
    if preset == "bev":
        distance = 1.05 * max(extent[0] / 2 / tan_v, extent[1] / 2 / tan_h)
        eye = np.array([center[0], center[1], high[2] + distance])
        return CameraView(eye, center, np.array([1.0, 0.0, 0.0]), float(fov_deg))
    if preset == "ego":
        anchor = np.array([center[0], center[1], low[2]])
        if field.frame == "ego" and (low[:2] <= 0).all() and (high[:2] >= 0).all():
            anchor = np.array([0.0, 0.0, np.clip(0.0, low[2], high[2])])
        half = min(extent[0], extent[1]) / 2
        eye = anchor + np.array([-0.25 * half, 0.0, 0.15 * half + 1.5])
        return CameraView(eye, anchor + np.array([0.4 * half, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), float(fov_deg))
    radius = float(np.linalg.norm(extent)) / 2
    distance = 1.02 * radius / np.sin(np.arctan(min(tan_v, tan_h)))
    if fit == "content":  # a flat scene seen from 40 degrees up fills less than its bounding sphere
        distance *= 0.7
    direction = _unit(np.array([-1.0, 0.6, 0.75]))
    return CameraView(center + distance * direction, center, np.array([0.0, 0.0, 1.0]), float(fov_deg))


def field_colors(field: OpenVocabField, color_by: str = "rgb", relevance: np.ndarray | None = None, *,
                 selected: np.ndarray | None = None, threshold: float = 0.5,
                 value_range: tuple[float, float] | None = None,
                 occupancy_threshold: float = 0.5) -> FieldColors:
    """The shown feature voxels and their colours (module docstring).

    Args:
        field: the field.
        color_by: one of :data:`COLOR_MODES`.
        relevance: ``[M]`` score per feature voxel (``"relevance"``), e.g. ``QueryResult.scores``; NaN
            means not scored (such voxels are dimmed).
        selected: ``[M]`` bool, the voxels that answer the query (``QueryResult.selected``); default
            ``relevance >= threshold``.
        threshold: the score a voxel needs when ``selected`` is not given.
        value_range: ``(low, high)`` of the colour map; default the min / max over the selected scores
            (``"relevance"``) or the shown voxel centres' z (``"height"``, metres).
        occupancy_threshold: occupancy probability a feature voxel needs to be shown.

    Returns:
        :class:`FieldColors` (rows ``[K]``, rgb ``[K, 3]`` uint8, the mode and the colour map's range).

    Raises:
        FieldError / ViewError: unknown mode, a field without colours / labels for ``"rgb"`` /
            ``"class"``, missing or mis-shaped relevance / selected, bad thresholds or range.
    """
    _check_choice(color_by, COLOR_MODES, "color_by")
    if value_range is not None:
        value_range = (float(value_range[0]), float(value_range[1]))
        if not (np.isfinite(value_range).all() and value_range[0] < value_range[1]):
            raise ViewError(f"value_range must be two finite numbers low < high, got {value_range}")
    rows = np.flatnonzero(field.occupied_mask(occupancy_threshold)[tuple(field.indices.T.astype(np.int64))])
    if color_by == "rgb":
        if field.colors is None:
            raise ViewError("color_by='rgb' needs a field with colors (this one has none)")
        return FieldColors(rows, field.colors[rows], color_by, None)
    if color_by == "class":
        if field.labels is None:
            raise ViewError("color_by='class' needs a field with labels (this one has none)")
        return FieldColors(rows, class_colors(field.labels[rows]), color_by, None)
    if color_by == "height":
        z = field.voxel_centers(field.indices[rows])[:, 2]
        low, high = value_range or ((float(z.min()), float(z.max())) if len(z) else (0.0, 1.0))
        return FieldColors(rows, relevance_colors(z, low, high), color_by, (low, high))
    if relevance is None:
        raise ViewError("color_by='relevance' needs relevance, one score per feature voxel [M]")
    scores = np.asarray(relevance, dtype=np.float64)
    if scores.shape != (field.num_features,):
        raise ViewError(f"relevance must have shape [{field.num_features}], got {list(scores.shape)}")
    finite = np.isfinite(scores)
    if selected is None:
        with np.errstate(invalid="ignore"):
            selected = finite & (scores >= float(threshold))
    selected = np.asarray(selected)
    if selected.shape != (field.num_features,) or selected.dtype != np.bool_:
        raise ViewError(f"selected must be [{field.num_features}] bool, got {list(selected.shape)} {selected.dtype}")
    lit = selected[rows] & finite[rows]
    if value_range is None:
        pool = scores[rows][lit] if lit.any() else scores[rows][finite[rows]]
        value_range = (float(pool.min()), float(pool.max())) if len(pool) else (0.0, 1.0)
        if value_range[0] >= value_range[1]:
            value_range = (value_range[0] - 0.5, value_range[0] + 0.5)
    rgb = np.empty((len(rows), 3), dtype=np.uint8)
    rgb[lit] = relevance_colors(scores[rows][lit], *value_range)
    rgb[~lit] = _dimmed(None if field.colors is None else field.colors[rows][~lit], int((~lit).sum()))
    return FieldColors(rows, rgb, color_by, value_range)


def _dimmed(colors: np.ndarray | None, count: int) -> np.ndarray:
    """``[count, 3]`` uint8 light grey, a little brighter or darker with the voxels' own RGB when given."""
    if colors is None:
        return np.full((count, 3), DIMMED_GREY, dtype=np.uint8)
    luma = colors.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    grey = np.clip(DIMMED_GREY + 0.25 * (luma - 128.0), 0, 255)
    return np.repeat(np.round(grey)[:, None], 3, axis=1).astype(np.uint8)


def legend_image(field: OpenVocabField, colors: FieldColors, height: int, width: int | None = None,
                 label: str | None = None, class_names: Sequence[str] | Mapping[int, str] | None = None,
                 ) -> np.ndarray | None:
    """The legend of a view: a colour bar (``"relevance"``, ``"height"``), a class legend (``"class"``)
    or None (``"rgb"``); ``[height, width, 3]`` uint8."""
    if colors.color_by == "class":
        present = field.labels[colors.rows] if field.labels is not None else np.zeros(0, np.int64)
        return class_legend_image(present, height, width or 170, class_names)
    if colors.value_range is None:
        return None
    if label is None:
        label = "height z (m)" if colors.color_by == "height" else "relevance"
    other = (DIMMED_GREY,) * 3 if colors.color_by == "relevance" else None
    return colorbar_image(*colors.value_range, height=height, width=width or 120, label=label, other_color=other)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int, max_lines: int = 3) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    lines = lines[:max_lines]
    for i, line in enumerate(lines):
        while len(line) > 3 and draw.textlength(line, font=font) > width:
            line = line[:-4] + "..."
        lines[i] = line
    return lines


def _text_left_middle(draw, x: float, y: float, text: str, font) -> None:
    """Draw black ``text`` starting at ``x``, vertically centred on ``y`` (also with Pillow's bitmap font)."""
    box = draw.textbbox((0, 0), text, font=font)
    draw.text((x, y - (box[1] + box[3]) / 2), text, fill=(0, 0, 0), font=font)


def colorbar_image(low: float, high: float, height: int = 256, width: int = 120, label: str = "",
                   other_color: Sequence[int] | None = None, ticks: int = 5) -> np.ndarray:
    """A vertical viridis colour bar ``[height, width, 3]`` uint8 on white: ``high`` (yellow) at the top,
    ``low`` (dark purple) at the bottom, ``ticks`` labelled values (Pillow's default font), ``label``
    wrapped above it and, with ``other_color``, a swatch marked "other" below (the dimmed voxels)."""
    from PIL import Image, ImageDraw

    if not (np.isfinite([low, high]).all() and low < high):
        raise ViewError(f"colour bar range must be finite with low < high, got {low}, {high}")
    if height < 64 or width < 60:
        raise ViewError(f"colour bar needs at least 64 x 60 pixels (height x width), got {height} x {width}")
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = _font(12)
    lines = _wrap(draw, label, font, width - 8) if label else []
    top = 8 + 15 * len(lines) + (6 if lines else 0)
    bottom = height - (30 if other_color is not None else 10)
    for i, line in enumerate(lines):
        draw.text((4, 6 + 15 * i), line, fill=(0, 0, 0), font=font)
    if bottom - top < 20:
        raise ViewError(f"colour bar height {height} leaves no room for the bar under its label")
    values = np.linspace(high, low, bottom - top)  # row by row, top = high
    strip = relevance_colors(values, low, high)  # [rows, 3]
    bar_left, bar_right = 6, 26
    pixels = np.asarray(image).copy()
    pixels[top:bottom, bar_left:bar_right] = strip[:, None, :]
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.rectangle((bar_left - 1, top - 1, bar_right, bottom), outline=(0, 0, 0))
    for value in np.linspace(low, high, max(2, ticks)):
        y = bottom - 1 - (value - low) / (high - low) * (bottom - top - 1)
        draw.line((bar_right, y, bar_right + 4, y), fill=(0, 0, 0))
        _text_left_middle(draw, bar_right + 7, y, f"{value:.3g}", font)
    if other_color is not None:
        draw.rectangle((bar_left, height - 22, bar_right - 1, height - 8), fill=tuple(int(c) for c in other_color),
                       outline=(0, 0, 0))
        _text_left_middle(draw, bar_right + 7, height - 15, "other", font)
    return np.asarray(image, dtype=np.uint8).copy()


def class_legend_image(labels: np.ndarray, height: int = 256, width: int = 170,
                       class_names: Sequence[str] | Mapping[int, str] | None = None) -> np.ndarray:
    """A legend ``[height, width, 3]`` uint8 on white: one palette swatch and name per class id present in
    ``labels`` (``[K]`` ints), by id; names default to the synthetic / Occ3D class names
    (:data:`geo3d.synthetic.classes.CLASS_NAMES`), ``"class N"`` beyond them; "+N more" when they do not fit."""
    from PIL import Image, ImageDraw

    if class_names is None:
        from geo3d.synthetic.classes import CLASS_NAMES as class_names
    names = dict(class_names) if isinstance(class_names, Mapping) else dict(enumerate(class_names))
    ids = np.unique(np.asarray(labels, dtype=np.int64))
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = _font(12)
    room = max(1, (height - 8) // 18)
    shown = ids if len(ids) <= room else ids[: room - 1]
    for row, (class_id, rgb) in enumerate(zip(shown, class_colors(shown))):
        y = 6 + 18 * row
        draw.rectangle((6, y, 20, y + 13), fill=tuple(int(c) for c in rgb), outline=(0, 0, 0))
        text = f"{class_id} {names.get(int(class_id), f'class {class_id}')}"
        _text_left_middle(draw, 26, y + 7, _wrap(draw, text, font, width - 30, 1)[0], font)
    if len(shown) < len(ids):
        _text_left_middle(draw, 26, 6 + 18 * len(shown) + 7, f"+{len(ids) - len(shown)} more", font)
    return np.asarray(image, dtype=np.uint8).copy()


def cube_faces(field: OpenVocabField, rows: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, ...]:
    """Visible cube faces of the voxels ``rows`` ``[K]`` coloured ``rgb`` ``[K, 3]`` uint8: faces between a
    shown voxel and a hidden one only, each a quad shaded by its direction (:data:`_FACE_SHADE`).

    Returns:
        ``vertices [F * 4, 3]`` float64 (metres, field frame), ``triangles [F * 2, 3]`` int64
        (counter-clockwise seen from outside), ``colors [F * 4, 3]`` float64 in [0, 1].
    """
    index = field.indices[rows].astype(np.int64)
    shown = np.zeros(tuple(np.array(field.shape) + 2), dtype=bool)  # padded by one voxel on each side
    shown[tuple((index + 1).T)] = True
    vertices, colors = [], []
    for face, (quad, shade) in enumerate(zip(_FACE_QUADS, _FACE_SHADE)):
        step = np.zeros(3, dtype=np.int64)
        step[face // 2] = 1 if face % 2 else -1
        open_ = ~shown[tuple((index + 1 + step).T)]  # the neighbour across this face is not shown
        if not open_.any():
            continue
        corners = field.origin + (index[open_, None, :] + quad[None]) * field.voxel_size  # [F, 4, 3]
        vertices.append(corners.reshape(-1, 3))
        colors.append(np.repeat(rgb[open_].astype(np.float64) / 255.0 * shade, 4, axis=0))
    if not vertices:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3))
    vertices, colors = np.concatenate(vertices), np.concatenate(colors)
    base = 4 * np.arange(len(vertices) // 4)[:, None]
    triangles = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], axis=1).reshape(-1, 3)
    return vertices, triangles, np.clip(colors, 0.0, 1.0)


_RENDERER: dict[str, Any] = {}


def release_renderer() -> None:
    """Clear and drop the renderer :func:`render_field` keeps (call it before making another Open3D
    renderer: two live renderers crash Open3D 0.19 at exit); registered with :mod:`atexit`."""
    renderer = _RENDERER.pop("renderer", None)
    _RENDERER.pop("size", None)
    if renderer is not None:
        renderer.scene.clear_geometry()
        del renderer
        import gc

        gc.collect()


@contextlib.contextmanager
def _native_output_captured():
    """Collect what native code writes to file descriptors 1 and 2 (Open3D / Filament / EGL start-up
    chatter) instead of letting it into the command's stdout; yields a function returning that text."""
    import sys
    import tempfile

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved, python_text = [os.dup(1), os.dup(2)], io.StringIO()  # Open3D logs through Python's sys.stdout
    with tempfile.TemporaryFile() as sink, contextlib.redirect_stdout(python_text), \
            contextlib.redirect_stderr(python_text):
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield lambda: python_text.getvalue() + (sink.seek(0), sink.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _offscreen_renderer(width: int, height: int):
    os.environ.setdefault("EGL_PLATFORM", "surfaceless")
    from geo3d.utils.optional import require

    o3d = require("open3d")
    if _RENDERER.get("size") != (width, height):
        release_renderer()
        with _native_output_captured() as captured:
            try:
                _RENDERER["renderer"] = o3d.visualization.rendering.OffscreenRenderer(width, height)
                _RENDERER["renderer"].render_to_image()  # the first frame prints more start-up lines
            except Exception as error:  # noqa: BLE001 - Open3D raises plain RuntimeErrors
                _RENDERER.pop("renderer", None)
                log = " | ".join(line for line in captured().splitlines() if line.strip())[-300:]
                raise ViewError(f"Open3D's offscreen renderer could not start ({error}; {log})") from None
        _RENDERER["size"] = (width, height)
        if len(_RENDERER) == 2 and not _RENDERER.get("atexit"):
            atexit.register(release_renderer)
            _RENDERER["atexit"] = True
    return o3d, _RENDERER["renderer"]


def field_geometry(field: OpenVocabField, colors: FieldColors, mode: str = "points"):
    """The Open3D geometry of a view: a ``PointCloud`` of voxel centres or a ``TriangleMesh`` of
    :func:`cube_faces` (``mode``, :data:`RENDER_MODES`)."""
    from geo3d.utils.optional import require

    _check_choice(mode, RENDER_MODES, "mode")
    o3d = require("open3d")
    if mode == "points":
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(field.voxel_centers(field.indices[colors.rows])))
        cloud.colors = o3d.utility.Vector3dVector(colors.rgb.astype(np.float64) / 255.0)
        return cloud
    vertices, triangles, vertex_colors = cube_faces(field, colors.rows, colors.rgb)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(triangles))
    mesh.vertex_colors = o3d.utility.Vector3dVector(vertex_colors)
    return mesh


def auto_point_size(field: OpenVocabField, camera: CameraView, height: int) -> float:
    """Point size (pixels) that makes a voxel at the look-at distance about fill its footprint, 1..25."""
    distance = float(np.linalg.norm(camera.center - camera.eye))
    focal = 0.5 * height / np.tan(np.radians(camera.fov_deg) / 2)
    return float(np.clip(np.round(1.1 * field.voxel_size.max() * focal / max(distance, 1e-6)), 1, 25))


def render_field(field: OpenVocabField, *, color_by: str = "rgb", relevance: np.ndarray | None = None,
                 selected: np.ndarray | None = None, threshold: float = 0.5,
                 value_range: tuple[float, float] | None = None, occupancy_threshold: float = 0.5,
                 colors: FieldColors | None = None, preset: str = "oblique", camera: CameraView | None = None,
                 size: tuple[int, int] = (1024, 768), mode: str = "points", point_size: float | None = None,
                 background: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """Render a view of ``field`` headless with Open3D's offscreen renderer (unlit colours).

    Args:
        field: the field.
        color_by, relevance, selected, threshold, value_range, occupancy_threshold: what is shown
            (:func:`field_colors`); or ``colors`` computed before.
        preset: camera preset (:data:`CAMERA_PRESETS`), or ``camera`` to use instead.
        size: ``(W, H)`` pixels, each 16..8192.
        mode: ``"points"`` (voxel centres as square points of ``point_size`` pixels, default
            :func:`auto_point_size`) or ``"cubes"`` (:func:`cube_faces`).
        background: RGB 0-255.

    Returns:
        ``[H, W, 3]`` uint8 image.

    Raises:
        ViewError / FieldError: bad options, nothing to show, or a renderer that cannot start.
    """
    width, height = check_image_size(size)
    _check_choice(mode, RENDER_MODES, "mode")
    background = np.asarray(background, dtype=np.float64)
    if background.shape != (3,) or not ((background >= 0) & (background <= 255)).all():
        raise ViewError(f"background must be 3 numbers in 0..255, got {background.tolist()}")
    if point_size is not None and not (np.isfinite(point_size) and 0 < point_size <= 100):
        raise ViewError(f"point_size must be in (0, 100] pixels, got {point_size}")
    if colors is None:
        colors = field_colors(field, color_by, relevance, selected=selected, threshold=threshold,
                              value_range=value_range, occupancy_threshold=occupancy_threshold)
    if len(colors.rows) == 0:
        raise ViewError(f"nothing to show: none of the field's {field.num_features} feature voxels has "
                        f"occupancy >= {occupancy_threshold}")
    camera = camera if camera is not None else camera_view(field, preset, aspect=width / height)
    geometry = field_geometry(field, colors, mode)
    o3d, renderer = _offscreen_renderer(width, height)
    material = o3d.visualization.rendering.MaterialRecord()
    material.shader = "defaultUnlit"
    material.point_size = float(point_size or auto_point_size(field, camera, height))
    scene = renderer.scene
    scene.clear_geometry()
    scene.set_background([*(background / 255.0), 1.0])
    scene.show_axes(False)
    scene.view.set_post_processing(False)  # no tone mapping: pixels keep the exact colours (and the colour bar's)
    scene.add_geometry("field", geometry, material)
    near, far = _clip_range(field, camera)
    renderer.setup_camera(float(camera.fov_deg), camera.center.astype(np.float32), camera.eye.astype(np.float32),
                          camera.up.astype(np.float32), near, far)
    image = np.asarray(renderer.render_to_image())[..., :3].copy()
    scene.clear_geometry()
    return image


def _clip_range(field: OpenVocabField, camera: CameraView) -> tuple[float, float]:
    """Near / far clip distances (metres) that keep the whole grid (Open3D's default fits the geometry's
    bounding box, which clips a lone voxel)."""
    corners = field.origin + np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) \
        * np.array(field.shape) * field.voxel_size
    far = 1.1 * float(np.linalg.norm(corners - camera.eye, axis=1).max()) + 1.0
    return max(0.01, far * 1e-4), far


def check_image_size(size: Sequence[int]) -> tuple[int, int]:
    """``(W, H)`` as ints, or :class:`ViewError` unless each is 16..8192 pixels."""
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ViewError(f"size must be (width, height) in pixels, got {size!r}") from None
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise ViewError(f"image size must be 16..8192 pixels each way, got {width} x {height}")
    return width, height


def compose(image: np.ndarray, legend: np.ndarray | None = None) -> np.ndarray:
    """``image [H, W, 3]`` uint8 with ``legend [h, w, 3]`` uint8 on its right (top-aligned, white below):
    ``[max(H, h), W + w, 3]``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ViewError(f"image must be [H, W, 3] uint8, got {list(image.shape)} {image.dtype}")
    if legend is None:
        return image
    legend = np.asarray(legend)
    if legend.ndim != 3 or legend.shape[2] != 3 or legend.dtype != np.uint8:
        raise ViewError(f"colour bar / legend must be [H, W, 3] uint8, got {list(legend.shape)} {legend.dtype}")
    out = np.full((max(image.shape[0], legend.shape[0]), image.shape[1] + legend.shape[1], 3), 255, np.uint8)
    out[: image.shape[0], : image.shape[1]] = image
    out[: legend.shape[0], image.shape[1]:] = legend
    return out


def check_png_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or :class:`ViewError` unless it ends in ``.png`` and is not a folder."""
    path = Path(path)
    if path.suffix.lower() != ".png" or path.is_dir():
        raise ViewError(f"screenshot path must be a .png file, got {str(path)!r}")
    return path


def save_screenshot(path: str | os.PathLike, image: np.ndarray, colorbar: np.ndarray | None = None) -> Path:
    """Write ``image [H, W, 3]`` uint8 (with ``colorbar`` / legend on the right, :func:`compose`) as a PNG,
    encoded in memory and written atomically; returns the path."""
    from PIL import Image

    path = check_png_path(path)
    buffer = io.BytesIO()
    Image.fromarray(compose(image, colorbar)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
