"""``geo3d view FIELD``: show an open-vocabulary field coloured by RGB, class, height or a text query's
relevance, in an Open3D window (a text box to type a new query, colour and camera controls, a colour
bar) or, with ``--screenshot out.png``, rendered headless to a PNG (the colour bar / legend on the right).

Everything but the window itself is plain code tested without a display: :class:`ViewState` (what is
shown for a query) and :mod:`geo3d.fields.view` (camera presets, colours, legends, rendering).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

ColorBy = Literal["auto", "rgb", "class", "relevance", "height"]
NO_DISPLAY = "no display: use --screenshot out.png to render the view headless"


@dataclass
class Config:
    """Show a field: an Open3D window, or a PNG rendered headless with --screenshot."""

    field: tyro.conf.Positional[Annotated[Path, tyro.conf.arg(metavar="FIELD")]]
    """Field file (.npz written by 'geo3d reconstruct' or OpenVocabField.save)."""
    query: str | None = None
    """Text to look for; the voxels that answer it are coloured by relevance, the rest dimmed grey."""
    vocabulary: str | None = None
    """Comma-separated class phrases: score the query by a softmax over them (zero-shot) instead of LERF
    relevancy against generic negatives."""
    color_by: ColorBy = "auto"
    """auto: relevance with a query, else rgb when the field has colours, else class when it has labels,
    else height."""
    mode: Literal["points", "cubes"] = "points"
    """Draw voxel centres as points, or voxels as cubes."""
    preset: Literal["bev", "ego", "oblique"] = "oblique"
    """Camera: bird's-eye view, chase camera behind the ego origin, or a 3/4 view."""
    fit: Literal["content", "grid"] = "content"
    """What bev / oblique frame: the shown voxels (3rd..97th percentile box) or the whole grid."""
    screenshot: Path | None = None
    """Render headless to this .png (no window, no display needed) and print its path."""
    width: int = 1024
    """Picture (or window 3D view) width, pixels; the colour bar / legend is added on the right."""
    height: int = 768
    """Picture height, pixels."""
    threshold: float | None = None
    """Score a voxel needs to answer the query (default 0.5 relevancy, 0 softmax: the argmax alone)."""
    occupancy_threshold: float = 0.5
    """Occupancy probability a voxel needs to be shown."""
    point_size: float | None = None
    """Point size in pixels (default: about one voxel at the look-at distance)."""
    text_encoder: str | None = None
    """Text encoder spec of the query (default: the field's metadata 'text_encoder', else minilm)."""


def load_text_encoder(spec: str):
    """The text encoder of ``spec`` (:func:`geo3d.language.get_text_encoder`); tests replace it."""
    from geo3d.language import get_text_encoder

    return get_text_encoder(spec)


def has_display() -> bool:
    """Whether a window can open: always on macOS / Windows, else ``$DISPLAY`` or ``$WAYLAND_DISPLAY`` set."""
    if sys.platform == "darwin" or os.name == "nt":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def parse_vocabulary(text: str | None) -> list[str] | None:
    """``"car, road"`` -> ``["car", "road"]``; None stays None; an empty item is a :class:`ViewError`."""
    from geo3d.fields.view import ViewError

    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if not items or any(not item for item in items):
        raise ViewError(f"--vocabulary must be comma-separated non-empty phrases, got {text!r}")
    return items


class ViewState:
    """What the view shows, without any window: the field, the current query and its answer, the colour
    mode, render mode and camera preset. The screenshot and the window both draw from it.

    Args:
        field: the :class:`~geo3d.structures.OpenVocabField`.
        config: the command's :class:`Config` (query options, thresholds, colour / render modes, preset).
    """

    def __init__(self, field, config: Config) -> None:
        from geo3d.fields.view import COLOR_MODES, RENDER_MODES, ViewError, camera_view

        self.field, self.config = field, config
        self.vocabulary = parse_vocabulary(config.vocabulary)
        if self.vocabulary and config.query is None:
            raise ViewError("--vocabulary scores a query: give --query too")
        if config.color_by not in ("auto", *COLOR_MODES):
            raise ViewError(f"unknown color_by {config.color_by!r} (choose one of: auto, {', '.join(COLOR_MODES)})")
        if config.color_by == "relevance" and config.query is None:
            raise ViewError("--color-by relevance needs a --query")
        if config.query is not None and config.color_by not in ("auto", "relevance"):
            raise ViewError(f"--query colours the field by relevance; drop --color-by {config.color_by} "
                            "(or the query)")
        if config.mode not in RENDER_MODES:
            raise ViewError(f"unknown mode {config.mode!r} (choose one of: {', '.join(RENDER_MODES)})")
        camera_view(field, config.preset)  # checks the preset name
        self.mode, self.preset, self.fit = config.mode, config.preset, config.fit
        self.color_by = config.color_by if config.color_by != "auto" else self.default_color_by()
        self.result = None  # the current QueryResult
        self._query = None  # FieldQuery, made with the first query
        if config.query is not None:
            self.set_query(config.query)

    def default_color_by(self) -> str:
        """The ``auto`` colour mode without a query: rgb, else class, else height."""
        if self.field.colors is not None:
            return "rgb"
        return "class" if self.field.labels is not None else "height"

    def available_color_modes(self) -> list[str]:
        """Colour modes this field (and the current query) can show."""
        modes = (["rgb"] if self.field.colors is not None else []) + (["class"] if self.field.labels is not None
                                                                       else [])
        return modes + ["height"] + (["relevance"] if self.result is not None else [])

    def set_query(self, text: str):
        """Answer ``text`` (the text encoder loads with the first query) and colour by relevance.

        Returns:
            the :class:`~geo3d.fields.QueryResult`.

        Raises:
            FieldError / LanguageError: empty text, a text encoder in another space than the field's, ...
        """
        from geo3d.fields.query import FieldQuery
        from geo3d.fields.view import ViewError

        if not isinstance(text, str) or not text.strip():
            raise ViewError(f"a query must be non-empty text, got {text!r}")
        if self._query is None:
            spec = self.config.text_encoder or self.field.metadata.get("text_encoder", "minilm")
            encoder = load_text_encoder(spec)
            self.field.check_space(encoder.space)
            self._query = FieldQuery(self.field, encoder, mode="softmax" if self.vocabulary else "relevancy",
                                     vocabulary=self.vocabulary, threshold=self.config.threshold,
                                     occupancy_threshold=self.config.occupancy_threshold)
        self.result = self._query([text.strip()])[0]
        self.color_by = "relevance"
        return self.result

    def colors(self):
        """:class:`~geo3d.fields.view.FieldColors` of the current state."""
        from geo3d.fields.view import field_colors

        result = self.result if self.color_by == "relevance" else None
        value_range = None
        if result is not None and result.threshold < 1.0:
            value_range = (result.threshold, 1.0)  # relevancy and softmax probabilities lie in [0, 1]
        return field_colors(self.field, self.color_by, None if result is None else result.scores,
                            selected=None if result is None else result.selected, value_range=value_range,
                            occupancy_threshold=self.config.occupancy_threshold)

    def legend(self, height: int, colors=None):
        """Colour bar / class legend ``[height, w, 3]`` uint8 for the current state, or None (rgb)."""
        from geo3d.fields.view import legend_image

        colors = self.colors() if colors is None else colors
        label = None
        if colors.color_by == "relevance" and self.result is not None:
            label = f'{self.result.mode} "{self.result.text}"'
        names = self.field.metadata.get("class_names")
        names = names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None
        return legend_image(self.field, colors, height, label=label, class_names=names)

    def status(self) -> str:
        """One line about the current query (or the field)."""
        if self.result is None or self.color_by != "relevance":
            return f"{self.field.num_features} feature voxels, coloured by {self.color_by}"
        n = len(self.result.components)
        return f'"{self.result.text}": {n} object{"s" if n != 1 else ""}, {self.result.num_selected} voxels'

    def screenshot(self, path: Path, size: tuple[int, int], point_size: float | None = None) -> Path:
        """Render the state headless and write the PNG with its legend (atomically); returns the path."""
        from geo3d.fields.view import camera_view, render_field, save_screenshot

        colors = self.colors()
        camera = camera_view(self.field, self.preset, aspect=size[0] / size[1], fit=self.fit)
        image = render_field(self.field, colors=colors, size=size, camera=camera, mode=self.mode,
                             point_size=point_size)
        return save_screenshot(path, image, self.legend(size[1], colors))


def run(config: Config) -> int:
    from geo3d.fields.view import check_image_size, check_png_path
    from geo3d.structures import OpenVocabField

    if config.query is not None and not config.query.strip():
        from geo3d.fields.view import ViewError

        raise ViewError(f"--query must be non-empty text, got {config.query!r}")
    size = check_image_size((config.width, config.height))
    screenshot = None if config.screenshot is None else check_png_path(config.screenshot)
    if screenshot is None and not has_display():  # before the field and the text encoder load
        from geo3d.fields.view import ViewError

        raise ViewError(NO_DISPLAY)
    state = ViewState(OpenVocabField.load(config.field), config)
    if screenshot is not None:
        print(state.screenshot(screenshot, size, config.point_size))
        return 0
    open_window(state, size, config.point_size)
    return 0


def open_window(state: ViewState, size: tuple[int, int], point_size: float | None = None) -> None:
    """Open the Open3D window on ``state`` and run it until closed.

    Raises:
        ViewError: no display (``$DISPLAY`` / ``$WAYLAND_DISPLAY`` unset on Linux).
    """
    from geo3d.fields.view import ViewError
    from geo3d.utils.optional import require

    if not has_display():
        raise ViewError(NO_DISPLAY)
    o3d = require("open3d")
    app = o3d.visualization.gui.Application.instance
    app.initialize()
    _FieldWindow(o3d, state, size, point_size)
    app.run()


class _FieldWindow:  # pragma: no cover - needs a display
    """The window: a 3D scene and a side panel (query box, colour / render mode, camera presets, legend)."""

    def __init__(self, o3d, state: ViewState, size: tuple[int, int], point_size: float | None) -> None:
        from geo3d.fields.view import CAMERA_PRESETS, RENDER_MODES

        gui, rendering = o3d.visualization.gui, o3d.visualization.rendering
        self.o3d, self.gui, self.rendering, self.state, self.point_size = o3d, gui, rendering, state, point_size
        self.panel_width, self.height, self._updating = 200, size[1], False
        self.window = gui.Application.instance.create_window(f"geo3d view: {state.config.field.name}",
                                                             size[0] + self.panel_width, size[1])
        em = self.window.theme.font_size
        self.widget = gui.SceneWidget()
        self.widget.scene = rendering.Open3DScene(self.window.renderer)
        self.widget.scene.set_background([1.0, 1.0, 1.0, 1.0])
        self.widget.scene.view.set_post_processing(False)  # exact colours, as in the colour bar
        self.panel = gui.Vert(0.5 * em, gui.Margins(0.5 * em, 0.5 * em, 0.5 * em, 0.5 * em))
        self.panel.add_child(gui.Label("Query (Enter):"))
        self.query = gui.TextEdit()
        self.query.placeholder_text = "e.g. car"
        self.query.text_value = state.result.text if state.result is not None else ""
        self.query.set_on_value_changed(self._on_query)
        self.panel.add_child(self.query)
        self.status = gui.Label(state.status())
        self.panel.add_child(self.status)
        self.panel.add_child(gui.Label("Colour by:"))
        self.color_box = gui.Combobox()
        self.color_box.set_on_selection_changed(self._on_color)
        self.panel.add_child(self.color_box)
        self.panel.add_child(gui.Label("Draw as:"))
        self.mode_box = gui.Combobox()
        for mode in RENDER_MODES:
            self.mode_box.add_item(mode)
        self.mode_box.selected_text = state.mode
        self.mode_box.set_on_selection_changed(self._on_mode)
        self.panel.add_child(self.mode_box)
        self.panel.add_child(gui.Label("Camera:"))
        buttons = gui.Horiz(0.25 * em)
        for preset in CAMERA_PRESETS:
            button = gui.Button(preset)
            button.set_on_clicked(lambda p=preset: self._set_preset(p))
            buttons.add_child(button)
        self.panel.add_child(buttons)
        self.legend = gui.ImageWidget(o3d.geometry.Image(self._legend()))
        self.panel.add_child(self.legend)
        self.window.add_child(self.widget)
        self.window.add_child(self.panel)
        self.window.set_on_layout(self._on_layout)
        self._refresh()
        self._set_preset(state.preset)

    def _legend(self):
        import numpy as np

        legend = self.state.legend(320)
        return np.ascontiguousarray(legend if legend is not None else np.full((320, 120, 3), 255, np.uint8))

    def _on_layout(self, _context) -> None:
        rect = self.window.content_rect
        self.widget.frame = self.gui.Rect(rect.x, rect.y, rect.width - self.panel_width, rect.height)
        self.panel.frame = self.gui.Rect(rect.get_right() - self.panel_width, rect.y, self.panel_width, rect.height)

    def _refresh(self) -> None:
        from geo3d.errors import Geo3dError
        from geo3d.fields.view import auto_point_size, camera_view, field_geometry

        self._updating = True  # filling the combobox must not re-enter _on_color
        self.color_box.clear_items()
        for mode in self.state.available_color_modes():
            self.color_box.add_item(mode)
        self.color_box.selected_text = self.state.color_by
        self._updating = False
        scene = self.widget.scene
        scene.clear_geometry()
        try:
            colors = self.state.colors()
        except Geo3dError as error:
            self.status.text = str(error)
            return
        material = self.rendering.MaterialRecord()
        material.shader = "defaultUnlit"
        material.point_size = float(self.point_size or auto_point_size(
            self.state.field, camera_view(self.state.field, self.state.preset, fit=self.state.fit), self.height))
        scene.add_geometry("field", field_geometry(self.state.field, colors, self.state.mode), material)
        self.legend.update_image(self.o3d.geometry.Image(self._legend()))
        self.status.text = self.state.status()

    def _on_query(self, text: str) -> None:
        from geo3d.errors import Geo3dError

        try:
            self.state.set_query(text)
        except Geo3dError as error:
            self.status.text = str(error)
            return
        self._refresh()

    def _on_color(self, text: str, _index: int) -> None:
        if self._updating or text == self.state.color_by:
            return
        self.state.color_by = text
        self._refresh()

    def _on_mode(self, text: str, _index: int) -> None:
        self.state.mode = text
        self._refresh()

    def _set_preset(self, preset: str) -> None:
        from geo3d.fields.view import camera_view

        field = self.state.field
        rect = self.widget.frame
        camera = camera_view(field, preset, aspect=max(rect.width, 1) / max(rect.height, 1), fit=self.state.fit)
        high = field.origin + field.voxel_size * field.shape
        bounds = self.o3d.geometry.AxisAlignedBoundingBox(field.origin, high)
        self.widget.setup_camera(camera.fov_deg, bounds, camera.center.astype("float32"))
        self.widget.look_at(camera.center.astype("float32"), camera.eye.astype("float32"),
                            camera.up.astype("float32"))
        self.state.preset = preset
