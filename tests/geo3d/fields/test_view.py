"""geo3d.fields.view: camera presets, colours, legends and headless rendering of a field.

Independent checks: the camera presets are verified by projecting voxel centres with a look-at
pinhole camera written here (not CameraView.project) and finding the rendered blobs / surfaces."""

import numpy as np
import pytest

from geo3d.fields import FieldQuery
from geo3d.fields.view import (
    CAMERA_PRESETS,
    DIMMED_GREY,
    ViewError,
    camera_view,
    class_legend_image,
    colorbar_image,
    cube_faces,
    field_colors,
    legend_image,
    render_field,
    save_screenshot,
)
from geo3d.language import encode_prompts
from geo3d.structures import OpenVocabField
from geo3d.structures.field import class_colors, relevance_colors

from text_encoder_stub import HashEncoder

SHAPE, VOXEL, ORIGIN = (40, 24, 8), 0.5, (-10.0, -6.0, -1.0)
CAR = (slice(26, 32), slice(10, 14), slice(2, 5))  # x 3..6 m, y -1..1 m, z 0..1.5 m


def street_field(colors=True, labels=True, low_occupancy_voxel=True) -> OpenVocabField:
    """A road slab (k = 1, z -0.5..0 m) and a box "car" on it, features = the stub's "road" / "car"."""
    occ = np.zeros(SHAPE, np.float32)
    occ[:, :, 1] = 1.0
    occ[CAR] = 1.0
    if low_occupancy_voxel:
        occ[2, 2, 6] = 0.2  # a feature voxel below the occupancy threshold: never shown
    idx = np.argwhere(occ > 0)
    is_car = (idx[:, 0] >= 26) & (idx[:, 0] < 32) & (idx[:, 1] >= 10) & (idx[:, 1] < 14) & (idx[:, 2] >= 2)
    road, car = encode_prompts(HashEncoder(dim=64), ["road", "car"]).numpy()
    feats = np.where(is_car[:, None], car, road).astype(np.float32)
    rgb = np.where(is_car[:, None], [200, 30, 30], [90, 90, 90]).astype(np.uint8)
    return OpenVocabField(ORIGIN, VOXEL, "ego", occ, idx, feats, HashEncoder.space,
                          colors=rgb if colors else None,
                          labels=np.where(is_car, 4, 11).astype(np.int16) if labels else None)


def single_voxel_field(ijk, rgb=(255, 0, 0)) -> OpenVocabField:
    occ = np.zeros((20, 20, 5), np.float32)
    occ[ijk] = 1.0
    return OpenVocabField((-5, -5, -1), 0.5, "ego", occ, np.array([ijk]), np.eye(1, 4, dtype=np.float32),
                          HashEncoder.space, colors=np.array([rgb], np.uint8))


def project_by_hand(points, eye, center, up, fov_deg, width, height):
    """Look-at pinhole projection (OpenCV axes), written independently of CameraView."""
    z = (center - eye) / np.linalg.norm(center - eye)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rel = np.atleast_2d(points) - eye
    cam = np.stack([rel @ x, rel @ y, rel @ z], axis=1)
    f = height / 2 / np.tan(np.radians(fov_deg) / 2)
    return np.stack([f * cam[:, 0] / cam[:, 2] + (width - 1) / 2, f * cam[:, 1] / cam[:, 2] + (height - 1) / 2], 1)


@pytest.fixture(scope="module")
def renderer():
    """Skip the rendering tests (with the reason) only when Open3D cannot render here."""
    from geo3d.errors import MissingDependencyError

    try:
        render_field(single_voxel_field((10, 10, 2)), size=(64, 48))
    except (MissingDependencyError, ViewError) as error:
        pytest.skip(f"Open3D cannot render offscreen here: {error}")


def test_camera_presets_frame_the_grid():
    field = street_field()
    low, high = field.origin, field.origin + np.array(field.shape) * field.voxel_size
    corners = np.array([[a, b, c] for a in (low[0], high[0]) for b in (low[1], high[1]) for c in (low[2], high[2])])
    width, height = 400, 300
    for preset in CAMERA_PRESETS:
        cam = camera_view(field, preset, aspect=width / height)
        uv, depth = cam.project(corners, width, height)
        np.testing.assert_allclose(uv, project_by_hand(corners, cam.eye, cam.center, cam.up, cam.fov_deg, width,
                                                       height), atol=1e-6)
        if preset != "ego":  # the whole grid is in view
            assert (depth > 0).all() and (uv >= -0.5).all() and (uv[:, 0] <= width).all() and (uv[:, 1] <= height).all()
    bev = camera_view(field, "bev")
    assert bev.eye[2] > high[2] and np.allclose(bev.eye[:2], bev.center[:2]) and np.allclose(bev.up, [1, 0, 0])
    ego = camera_view(field, "ego")
    assert ego.eye[0] < 0 and ego.eye[2] > 0 and ego.center[0] > 0 and abs(ego.eye[1]) < 1e-9  # behind, above
    with pytest.raises(ViewError, match="unknown camera preset 'top'"):
        camera_view(field, "top")


@pytest.mark.parametrize("preset", sorted(CAMERA_PRESETS))
def test_rendered_blobs_sit_where_the_camera_projects_them(renderer, preset):
    width, height = 160, 120
    for ijk in [(16, 10, 2), (10, 16, 2), (6, 7, 1)]:
        field = single_voxel_field(ijk)
        cam = camera_view(field, preset, aspect=width / height)
        expected = project_by_hand(field.voxel_centers(), cam.eye, cam.center, cam.up, cam.fov_deg, width, height)[0]
        image = render_field(field, preset=preset, size=(width, height), point_size=7)
        rows, cols = np.nonzero((image[..., 0] > 200) & (image[..., 1] < 80))
        inside = (expected >= 3).all() and expected[0] < width - 3 and expected[1] < height - 3
        if not inside:
            assert len(rows) == 0, (preset, ijk)
            continue
        assert 20 <= len(rows) <= 64, (preset, ijk)
        assert (image[rows, cols] == [255, 0, 0]).all() and (image[0, 0] == 255).all()  # exact colours
        np.testing.assert_allclose([cols.mean(), rows.mean()], expected, atol=1.0, err_msg=f"{preset} {ijk}")


def test_bev_shows_forward_up_and_left_left(renderer):
    width, height = 120, 120
    centre = (np.array([width, height]) - 1) / 2
    blobs = {}
    for name, ijk in {"+x": (17, 10, 2), "+y": (10, 17, 2)}.items():
        image = render_field(single_voxel_field(ijk), preset="bev", size=(width, height), point_size=5)
        rows, cols = np.nonzero(image[..., 1] < 80)
        blobs[name] = np.array([cols.mean(), rows.mean()]) - centre
    assert blobs["+x"][1] < -20 and abs(blobs["+x"][0]) < 8  # forward is up in the image
    assert blobs["+y"][0] < -20 and abs(blobs["+y"][1]) < 8  # left is left


def test_query_recolours_the_car_pixels(renderer):
    field = street_field()
    query = FieldQuery(field, HashEncoder(dim=64))
    car_result, road_result = query(["car", "road"])
    car_rows = np.flatnonzero(field.labels == 4)
    assert set(np.flatnonzero(car_result.selected)) == set(car_rows)
    assert not road_result.selected[car_rows].any() and road_result.num_selected == 40 * 24
    width, height = 320, 240
    car_centre = field.voxel_centers(field.indices[car_rows]).mean(axis=0)
    images = {}
    for result in (car_result, road_result):
        image = render_field(field, color_by="relevance", relevance=result.scores, selected=result.selected,
                             value_range=(0.5, 1.0), preset="oblique", size=(width, height), mode="cubes")
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 3  # not blank
        assert (image == 255).all(axis=2).mean() < 0.9  # the field covers part of the picture
        images[result.text] = image
    cam = camera_view(field, "oblique", aspect=width / height)
    u, v = np.round(project_by_hand(car_centre, cam.eye, cam.center, cam.up, cam.fov_deg, width, height)[0])
    car_pixel, road_pixel = (images[q][int(v), int(u)].astype(int) for q in ("car", "road"))
    assert car_pixel.max() - car_pixel.min() > 60  # a viridis colour (answers "car")
    assert road_pixel.max() - road_pixel.min() < 3  # dimmed grey (does not answer "road")
    points = render_field(field, color_by="relevance", relevance=car_result.scores, preset="bev", size=(160, 120))
    colours = {tuple(c) for c in np.unique(points.reshape(-1, 3), axis=0).tolist()}  # exact: no tone mapping
    single = tuple(relevance_colors(np.array([0.5]), 0.0, 1.0)[0])  # all car scores equal: the range's middle
    assert colours == {(255, 255, 255), (190, 190, 190), single}  # background, dimmed road (RGB 90), the car


def test_field_colors_modes():
    field = street_field()
    shown = field.occupancy[tuple(field.indices.T)] >= 0.5
    rgb = field_colors(field, "rgb")
    np.testing.assert_array_equal(rgb.rows, np.flatnonzero(shown))  # the 0.2-occupancy voxel is hidden
    np.testing.assert_array_equal(rgb.rgb, field.colors[shown])
    assert rgb.value_range is None
    np.testing.assert_array_equal(field_colors(field, "class").rgb, class_colors(field.labels[shown]))
    height = field_colors(field, "height")
    z = field.voxel_centers(field.indices[height.rows])[:, 2]
    assert height.value_range == (z.min(), z.max())
    luma = height.rgb @ np.array([0.299, 0.587, 0.114])
    assert luma[z == z.max()].min() > luma[z == z.min()].max()
    assert len(field_colors(field, "rgb", occupancy_threshold=0.1).rows) == field.num_features
    bare = street_field(colors=False, labels=False)
    with pytest.raises(ViewError, match="needs a field with colors"):
        field_colors(bare, "rgb")
    with pytest.raises(ViewError, match="needs a field with labels"):
        field_colors(bare, "class")
    with pytest.raises(ViewError, match="unknown color_by 'depth'"):
        field_colors(field, "depth")


def test_relevance_colours_light_the_answer_and_dim_the_rest():
    field = street_field(colors=False)
    scores = np.linspace(0.0, 1.0, field.num_features).astype(np.float32)
    scores[:5] = np.nan  # not scored
    colors = field_colors(field, "relevance", scores, threshold=0.7)
    lit = scores[colors.rows] >= 0.7
    assert colors.value_range == pytest.approx((scores[colors.rows][lit].min(), scores[colors.rows][lit].max()))
    assert (colors.rgb[~lit] == DIMMED_GREY).all()
    assert (colors.rgb[lit].max(axis=1) - colors.rgb[lit].min(axis=1) > 30).all()  # coloured, not grey
    luma = colors.rgb[lit] @ np.array([0.299, 0.587, 0.114])
    assert (np.diff(luma) >= -1).all()  # brighter with the score (rows are in score order here)
    chosen = np.zeros(field.num_features, bool)
    chosen[-3:] = True
    explicit = field_colors(field, "relevance", scores, selected=chosen, value_range=(0.0, 1.0))
    assert ((explicit.rgb != DIMMED_GREY).any(axis=1)).sum() == 3 and explicit.value_range == (0.0, 1.0)
    with_rgb = field_colors(street_field(), "relevance", scores, threshold=0.7)  # dimmed grey follows the RGB
    dim = with_rgb.rgb[~lit]
    assert (dim[:, 0] == dim[:, 1]).all() and len(np.unique(dim[:, 0])) > 1
    with pytest.raises(ViewError, match="needs relevance"):
        field_colors(field, "relevance")
    with pytest.raises(ViewError, match="relevance must have shape"):
        field_colors(field, "relevance", scores[:-1])
    with pytest.raises(ViewError, match="selected must be"):
        field_colors(field, "relevance", scores, selected=chosen.astype(int))
    with pytest.raises(ViewError, match="value_range"):
        field_colors(field, "relevance", scores, value_range=(1.0, 0.5))


def test_colorbar_is_monotone_in_lightness_with_ticks():
    bar = colorbar_image(0.5, 1.0, height=300, width=120, label='relevancy "parked car"', other_color=(200,) * 3)
    assert bar.shape == (300, 120, 3) and bar.dtype == np.uint8
    column = bar[:, 16].astype(float)  # the middle of the bar strip
    coloured = np.flatnonzero(column.max(axis=1) - column.min(axis=1) > 10)  # viridis rows (grey excluded)
    strip = column[coloured.min():coloured.max() + 1]
    assert len(strip) > 200
    luma = strip @ np.array([0.299, 0.587, 0.114])
    assert (np.diff(luma[::-1]) >= -1.0).all() and luma[0] - luma[-1] > 150  # brighter towards the top
    assert (bar[:, 35:] < 100).all(axis=2).sum() > 50  # tick labels drawn right of the bar
    assert (bar[:20] < 100).all(axis=2).sum() > 20  # the label above it
    with pytest.raises(ViewError, match="low < high"):
        colorbar_image(1.0, 1.0)
    with pytest.raises(ViewError, match="at least 64"):
        colorbar_image(0.0, 1.0, height=20)


def test_class_legend_shows_the_classes_present():
    legend = class_legend_image(np.array([11, 4, 4, 11]), height=100, width=160)
    colours = {tuple(c) for c in legend.reshape(-1, 3)}
    assert tuple(class_colors(np.array([4]))[0]) in colours and tuple(class_colors(np.array([11]))[0]) in colours
    assert tuple(class_colors(np.array([16]))[0]) not in colours
    crowded = class_legend_image(np.arange(30), height=100, width=160, class_names=["a"] * 30)
    assert crowded.shape == (100, 160, 3)
    field = street_field()
    assert legend_image(field, field_colors(field, "class"), 120).shape == (120, 170, 3)
    assert legend_image(field, field_colors(field, "height"), 120).shape == (120, 120, 3)
    assert legend_image(field, field_colors(field, "rgb"), 120) is None


def test_cube_faces_are_outward_and_shared_faces_culled():
    field = street_field()
    rows = np.flatnonzero((field.indices == [3, 3, 1]).all(1) | (field.indices == [4, 3, 1]).all(1))
    vertices, triangles, colors = cube_faces(field, rows, field.colors[rows])
    assert triangles.shape == (20, 3) and vertices.shape == (40, 3) and colors.max() <= 1.0  # 12 - 2 faces
    normals = np.cross(vertices[triangles[:, 1]] - vertices[triangles[:, 0]],
                       vertices[triangles[:, 2]] - vertices[triangles[:, 0]])
    outward = vertices[triangles].mean(axis=1) - field.voxel_centers(field.indices[rows]).mean(axis=0)
    assert (np.einsum("ij,ij->i", normals, outward) > 0).all()


def test_save_screenshot_adds_the_bar_and_writes_png_atomically(tmp_path):
    from PIL import Image

    image = np.zeros((50, 80, 3), np.uint8)
    image[10:20, 10:20] = [255, 0, 0]
    bar = colorbar_image(0.0, 1.0, height=64, width=60)
    path = save_screenshot(tmp_path / "shot.png", image, bar)
    with Image.open(path) as png:
        saved = np.asarray(png.convert("RGB"))
    assert saved.shape == (64, 140, 3)
    np.testing.assert_array_equal(saved[:50, :80], image)
    np.testing.assert_array_equal(saved[:, 80:], bar)
    for bad in ("shot.jpg", "shot"):
        with pytest.raises(ViewError, match="must be a .png file"):
            save_screenshot(tmp_path / bad, image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shot.png"]


def test_render_rejects_bad_options(renderer):
    field = street_field()
    with pytest.raises(ViewError, match="unknown mode 'voxels'"):
        render_field(field, mode="voxels")
    with pytest.raises(ViewError, match="unknown camera preset"):
        render_field(field, preset="side")
    with pytest.raises(ViewError, match="16..8192"):
        render_field(field, size=(8, 8))
    with pytest.raises(ViewError, match="nothing to show"):
        render_field(field.subset(field.occupancy[tuple(field.indices.T)] < 0.5), size=(32, 32))
