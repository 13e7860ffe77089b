"""geo3d view: headless screenshots that follow the query, bad inputs, and the window without a display."""

import numpy as np
import pytest
from PIL import Image

import geo3d_apps.view as view_app
from geo3d.fields.view import ViewError
from geo3d.language import encode_prompts
from geo3d.structures import OpenVocabField
from geo3d_apps.cli import main

from text_encoder_stub import HashEncoder


class OtherSpaceEncoder(HashEncoder):
    space = "hash:other"


def street_field(colors=True) -> OpenVocabField:
    """A 24 x 16 road slab (0.5 m voxels) with a 6 x 4 x 3 box "car"; features from the stub encoder."""
    occ = np.zeros((24, 16, 6), np.float32)
    occ[:, :, 1] = 1.0
    occ[14:20, 6:10, 2:5] = 1.0
    idx = np.argwhere(occ > 0)
    is_car = idx[:, 2] >= 2
    road, car = encode_prompts(HashEncoder(dim=64), ["road", "car"]).numpy()
    return OpenVocabField((-4.0, -4.0, -1.0), 0.5, "ego", occ, idx, np.where(is_car[:, None], car, road),
                          HashEncoder.space, colors=np.where(is_car[:, None], [200, 30, 30], [90, 90, 90]).astype(
                              np.uint8) if colors else None, labels=np.where(is_car, 4, 11).astype(np.int16))


@pytest.fixture
def field_path(tmp_path, monkeypatch):
    monkeypatch.setattr(view_app, "load_text_encoder", lambda spec: HashEncoder(dim=64))
    return street_field().save(tmp_path / "street.field.npz")


def _view(capsys, *args):
    code = main(["view", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_screenshot_changes_with_the_query(field_path, tmp_path, capsys):
    pictures = {}
    for query in ("car", "road"):
        out = tmp_path / f"{query}.png"
        code, stdout, err = _view(capsys, field_path, "--query", query, "--screenshot", out, "--width", 240,
                                  "--height", 180, "--mode", "cubes")
        assert code == 0, err
        assert stdout.strip() == str(out)
        pictures[query] = _png(out)
        assert pictures[query].shape == (180, 240 + 120, 3)  # the picture and the colour bar on its right
        assert len(np.unique(pictures[query][:, :240].reshape(-1, 3), axis=0)) > 3  # not blank
    changed = (pictures["car"][:, :240] != pictures["road"][:, :240]).any(axis=2)
    assert changed.mean() > 0.02
    assert sorted(p.name for p in tmp_path.iterdir()) == ["car.png", "road.png", "street.field.npz"]


def test_screenshot_colour_modes_and_presets(field_path, tmp_path, capsys):
    rgb = tmp_path / "rgb.png"
    assert _view(capsys, field_path, "--screenshot", rgb, "--width", 200, "--height", 150, "--preset", "bev")[0] == 0
    assert _png(rgb).shape == (150, 200, 3)  # auto -> rgb: no legend
    classes = tmp_path / "class.png"
    assert _view(capsys, field_path, "--screenshot", classes, "--width", 200, "--height", 150,
                 "--color-by", "class", "--preset", "ego")[0] == 0
    assert _png(classes).shape == (150, 200 + 170, 3)
    soft = tmp_path / "soft.png"
    code, _, err = _view(capsys, field_path, "--query", "car", "--vocabulary", "road, car", "--screenshot", soft,
                         "--width", 200, "--height", 150, "--color-by", "relevance")
    assert code == 0, err
    assert _png(soft).shape == (150, 320, 3)


def test_view_state_recolours_for_a_new_query(field_path):
    field = OpenVocabField.load(field_path)
    state = view_app.ViewState(field, view_app.Config(field=field_path))
    assert state.color_by == "rgb" and state.available_color_modes() == ["rgb", "class", "height"]
    state.set_query("car")
    car = state.colors()
    assert state.color_by == "relevance" and "relevance" in state.available_color_modes()
    assert state.status() == '"car": 1 object, 72 voxels'
    state.set_query("road")
    road = state.colors()
    is_car = field.labels[car.rows] == 4
    assert (car.rgb[is_car] != road.rgb[is_car]).any(axis=1).all()
    assert state.legend(200).shape == (200, 120, 3)
    with pytest.raises(ViewError, match="non-empty"):
        state.set_query("  ")
    bare = OpenVocabField(field.origin, field.voxel_size, "ego", field.occupancy, field.indices, field.features,
                          field.space)
    assert view_app.ViewState(bare, view_app.Config(field=field_path)).color_by == "height"


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case, args, message", [
    ("truncated", [], "truncated or corrupt field file"),
    ("empty query", ["--query", ""], "--query must be non-empty text"),
    ("not png", ["--screenshot", "{tmp}/shot.jpg"], "must be a .png file"),
    ("space", ["--query", "car"], "same text encoder"),
    ("relevance without query", ["--color-by", "relevance"], "needs a --query"),
    ("query and rgb", ["--query", "car", "--color-by", "rgb"], "drop --color-by rgb"),
    ("empty vocabulary item", ["--query", "car", "--vocabulary", "car,,road"], "comma-separated non-empty"),
    ("tiny", ["--width", "4"], "16..8192"),
    ("bad threshold", ["--query", "car", "--threshold", "2"], "threshold must be a number in [0, 1]"),
])
def test_bad_inputs_exit_nonzero_with_one_line_and_write_nothing(field_path, tmp_path, capsys, monkeypatch, case,
                                                                 args, message):
    if case == "truncated":
        _truncate(field_path)
    if case == "space":
        monkeypatch.setattr(view_app, "load_text_encoder", lambda spec: OtherSpaceEncoder(dim=64))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--screenshot" not in args:
        args += ["--screenshot", str(tmp_path / "shot.png")]
    code, stdout, err = _view(capsys, field_path, *args)
    assert code == 1 and stdout == ""
    assert err.startswith("geo3d view: error:") and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["street.field.npz"]


@pytest.mark.parametrize("args", [["--preset", "side"], ["--mode", "voxels"], ["--color-by", "depth"]])
def test_unknown_option_values_are_usage_errors(field_path, tmp_path, capsys, args):
    code, _, err = _view(capsys, field_path, *args, "--screenshot", tmp_path / "shot.png")
    assert code == 2 and args[1] in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["street.field.npz"]


def test_library_level_checks_of_the_same_options(field_path):
    field = OpenVocabField.load(field_path)
    for change, message in [({"preset": "side"}, "unknown camera preset"), ({"mode": "voxels"}, "unknown mode"),
                            ({"color_by": "depth"}, "unknown color_by")]:
        with pytest.raises(ViewError, match=message):
            view_app.ViewState(field, view_app.Config(field=field_path, **change))


def test_window_without_a_display_says_to_use_screenshot(field_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(view_app.sys, "platform", "linux")
    code, _, err = _view(capsys, field_path, "--query", "car")
    assert code == 1 and "no display: use --screenshot out.png" in err and len(err.strip().splitlines()) == 1
    state = view_app.ViewState(OpenVocabField.load(field_path), view_app.Config(field=field_path))
    with pytest.raises(ViewError, match="no display"):
        view_app.open_window(state, (320, 240))
