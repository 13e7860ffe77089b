"""geo3d reconstruct -> geo3d query on a small synthetic capture, the real nuScenes sample, and bad input."""

import json
import shutil

import numpy as np
import pytest

from geo3d.structures.field import OpenVocabField
from geo3d.synthetic.classes import CLASS_IDS
from geo3d.synthetic.generate import SynthConfig, write_synthetic_capture
from geo3d_apps.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("capture") / "street"
    write_synthetic_capture(SynthConfig(seed=3, frames=1, width=240, height=135), path)
    return path


@pytest.fixture(scope="module")
def fusion_field(capture_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("field") / "fusion.npz"
    # the synthetic stand-in teacher without its degradation: this checks the pipeline, not the teacher
    assert main(["reconstruct", str(capture_dir), "--method", "fusion", "--geometry", "depth", "--out", str(out),
                 "--label-noise-std", "0", "--label-confusion-rate", "0"]) == 0
    return out


def _car_boxes(capture_dir):
    """Ground-truth boxes (metres, ego frame) of the cars of the capture's occupancy, from instance ids."""
    from geo3d.io import read_capture

    occupancy = read_capture(capture_dir).frames[0].occupancy
    semantics, instances = occupancy.load_semantics(), occupancy.load_instances()
    visible = occupancy.load_mask("camera")
    boxes = []
    for instance in np.unique(instances[(semantics == CLASS_IDS["car"]) & visible]):
        if instance == 0:
            continue
        index = np.argwhere(instances == instance)
        lower = np.asarray(occupancy.origin) + index.min(0) * occupancy.voxel_size
        boxes.append((lower, np.asarray(occupancy.origin) + (index.max(0) + 1) * occupancy.voxel_size))
    return boxes


def _overlap(a_min, a_max, b_min, b_max) -> float:
    return float(np.prod(np.clip(np.minimum(a_max, b_max) - np.maximum(a_min, b_min), 0, None)))


def test_reconstruct_then_query_finds_a_car_where_the_ground_truth_has_one(capture_dir, fusion_field, capsys):
    capsys.readouterr()
    field = OpenVocabField.load(fusion_field)
    assert field.metadata["method"] == "fusion" and field.metadata["text_encoder"] == "minilm"
    assert main(["query", str(fusion_field), "car", "road", "--json", "--top-k", "3"]) == 0
    answer = json.loads(capsys.readouterr().out)
    car, road = answer["queries"]
    assert car["query"] == "car" and car["components"] >= 1 and road["voxels"] > car["voxels"]
    top = car["objects"][0]
    boxes = _car_boxes(capture_dir)
    assert boxes, "the scene has no visible car"
    overlaps = [_overlap(np.array(top["box_min"]), np.array(top["box_max"]), lo, hi) for lo, hi in boxes]
    assert max(overlaps) > 0, (top, boxes)
    # the answer is about cars: car voxels are far more frequent among the selected voxels than in the field
    from geo3d.fields.query import FieldQuery
    from geo3d.io import read_capture
    from geo3d.language import get_text_encoder

    gt = read_capture(capture_dir).frames[0].occupancy.load_semantics()
    labels = gt[tuple(field.indices.T.astype(np.int64))]
    selected = FieldQuery(field, get_text_encoder("minilm"))(["car"])[0].selected
    assert selected.sum() == car["voxels"]
    base_rate = np.mean(labels == CLASS_IDS["car"])
    assert np.mean(labels[selected] == CLASS_IDS["car"]) > 4 * base_rate


def test_query_prints_objects_and_exports_relevance_ply(fusion_field, tmp_path, capsys):
    import trimesh

    out = tmp_path / "answer.ply"
    capsys.readouterr()
    assert main(["query", str(fusion_field), "car", "building", "Car", "--export", str(out), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert main(["query", str(fusion_field), "car", "--top-k", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith('"car": ') and " found (" in text and "  1. centre (" in text
    field = OpenVocabField.load(fusion_field)
    shown = field.occupancy[tuple(field.indices.T.astype(np.int64))] >= 0.5
    names = ["answer.car.ply", "answer.building.ply", "answer.car-2.ply"]  # "Car" does not overwrite "car"
    assert answer["exported"] == [str(tmp_path / n) for n in names]
    clouds = [trimesh.load(tmp_path / n) for n in names]
    for query, cloud in zip(answer["queries"], clouds):
        assert len(cloud.vertices) == int(shown.sum())
        colors = np.asarray(cloud.visual.vertex_colors)[:, :3].astype(int)
        coloured = (colors.max(1) - colors.min(1)) > 40  # answering voxels in viridis, the rest grey
        assert coloured.sum() == query["voxels"] > 0
    assert not np.array_equal(clouds[0].visual.vertex_colors, clouds[1].visual.vertex_colors)


def test_vocabulary_segmentation_counts_every_feature_voxel(fusion_field, capsys):
    capsys.readouterr()
    assert main(["query", str(fusion_field), "--vocabulary", "car,road,building,tree", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    field = OpenVocabField.load(fusion_field)
    active = field.occupancy[tuple(field.indices.T.astype(np.int64))] >= 0.5
    assert sum(answer["segmentation_voxels"].values()) == int(active.sum())
    assert answer["segmentation_voxels"]["building"] > answer["segmentation_voxels"]["car"] > 0


@pytest.mark.parametrize("args, message", [
    (["query", "{field}", ""], "empty"),
    (["query", "{field}"], "at least one query"),
    (["query", "{field}", "car", "--threshold", "2"], "threshold"),
    (["query", "{field}", "car", "--export", "{tmp}/x.txt"], ".ply"),
    (["query", "{truncated}", "car"], "truncated"),
    (["reconstruct", "{capture}", "--method", "nerfx", "--out", "{tmp}/f.npz"], "unknown reconstruction method"),
    (["reconstruct", "{capture}", "--geometry", "sonar", "--out", "{tmp}/f.npz"], "geometry"),
    (["reconstruct", "{capture}", "--out", "{tmp}/f.txt"], ".npz"),
    (["reconstruct", "{tmp}/missing", "--out", "{tmp}/f.npz"], "does not exist"),
])
def test_bad_input_exits_non_zero_with_the_problem_named(args, message, fusion_field, capture_dir, tmp_path, capsys):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(fusion_field.read_bytes()[: fusion_field.stat().st_size // 2])
    filled = [a.format(field=fusion_field, tmp=tmp_path, truncated=truncated, capture=capture_dir) for a in args]
    capsys.readouterr()
    assert main(filled) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0].lower(), errors
    assert not list(tmp_path.glob("*.tmp"))


def test_unwritable_outputs_are_refused_before_the_work_and_failed_writes_leave_nothing(
        capture_dir, fusion_field, tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "folder.npz").mkdir()
    cases = [
        (["reconstruct", str(capture_dir), "--out", str(tmp_path / "folder.npz")], "is a folder"),
        (["reconstruct", str(capture_dir), "--out", str(tmp_path / "f.npz"), "--summary-json",
          str(tmp_path / "a-file" / "s.json")], "cannot write"),
        (["query", str(fusion_field), "car", "--export", str(tmp_path / "folder.npz" / "..")], ".ply"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "f.npz").exists()
    # a write that fails after the field was saved: the field is removed again, one-line error
    import geo3d.utils

    def failing(path, text):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(geo3d.utils, "atomic_write_text", failing)
    out = tmp_path / "g.npz"
    capsys.readouterr()
    code = main(["reconstruct", str(capture_dir), "--out", str(out), "--geometry", "lidar",
                 "--summary-json", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 1 and "No space left" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "s.json").exists()


def test_method_options_by_key_value(capture_dir, tmp_path, capsys):
    out = tmp_path / "p.npz"
    assert main(["reconstruct", str(capture_dir), "--method", "pop3d", "--out", str(out),
                 "--option", "ray_stride=4", "features_on=surface"]) == 0
    options = OpenVocabField.load(out).metadata["options"]
    assert options["ray_stride"] == 4 and options["features_on"] == "surface"
    capsys.readouterr()
    assert main(["reconstruct", str(capture_dir), "--method", "pop3d", "--out", str(tmp_path / "q.npz"),
                 "--option", "depth_stride=2"]) == 1
    assert "depth_stride=2" in capsys.readouterr().err and not (tmp_path / "q.npz").exists()


def test_negative_phrases_are_the_users_choice(fusion_field, capsys):
    field = OpenVocabField.load(fusion_field)
    active = int((field.occupancy[tuple(field.indices.T.astype(np.int64))] >= 0.5).sum())
    capsys.readouterr()
    # the query against itself as the only negative: relevancy sigmoid(0) = 0.5 everywhere, all voxels answer
    assert main(["query", str(fusion_field), "road", "--negatives", "road", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"][0]["voxels"] == active
    assert main(["query", str(fusion_field), "road", "--negatives", "object,,stuff"]) == 1
    assert "negatives" in capsys.readouterr().err


def test_query_refuses_a_field_from_another_text_space(fusion_field, tmp_path, capsys):
    field = OpenVocabField.load(fusion_field)
    field.space = "clip:some-other-model"
    other = field.save(tmp_path / "other.npz")
    assert main(["query", str(other), "car"]) != 0
    assert "space" in capsys.readouterr().err


def _broken_capture(capture_dir, tmp_path, edit):
    """A copy of the capture whose capture.json is changed by ``edit(json_dict, folder)``."""
    target = tmp_path / "broken"
    shutil.copytree(capture_dir, target)
    meta = target / "capture.json"
    data = json.loads(meta.read_text())
    edit(data, target)
    meta.write_text(json.dumps(data))
    return target


def _nan_pose(data, folder):
    camera = next(iter(data["frames"][0]["cameras"].values()))
    camera["cam2world"][0][3] = float("nan")


def _missing_image(data, folder):
    camera = next(iter(data["frames"][0]["cameras"].values()))
    (folder / camera["image"]).unlink()


def _empty_lidar(data, folder):
    sweep = next(iter(data["frames"][0]["lidar"].values()))
    np.save(folder / "empty_points.npy", np.zeros((0, len(sweep["columns"])), np.float32))
    np.save(folder / "empty_labels.npy", np.zeros(0, np.int64))
    sweep.update(points="empty_points.npy", semantic="empty_labels.npy", instance="empty_labels.npy")


def _no_cameras(data, folder):
    data["frames"][0]["cameras"] = {}


def _inconsistent_size(data, folder):
    camera = next(iter(data["frames"][0]["cameras"].values()))
    camera["width"], camera["height"] = camera["width"] // 2, camera["height"] // 2


@pytest.mark.parametrize("edit, extra, message", [
    (_nan_pose, [], "nan"),
    (_missing_image, [], "not found"),
    (_empty_lidar, ["--geometry", "lidar"], "empty"),
    (_no_cameras, [], "no cameras"),
    (_inconsistent_size, ["--method", "pop3d"], "cannot load its image"),
])
def test_reconstruct_rejects_broken_captures_before_writing(edit, extra, message, capture_dir, tmp_path, capsys):
    broken = _broken_capture(capture_dir, tmp_path, edit)
    out = tmp_path / "f.npz"
    capsys.readouterr()
    code = main(["reconstruct", str(broken), "--out", str(out), *extra])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code != 0 and len(errors) == 1 and message in errors[0].lower(), errors
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_reconstruct_refuses_to_overwrite_and_pop3d_runs_on_images_only(capture_dir, tmp_path, capsys):
    out = tmp_path / "pop3d.npz"
    assert main(["reconstruct", str(capture_dir), "--method", "pop3d", "--out", str(out),
                 "--summary-json", str(tmp_path / "summary.json")]) == 0
    field = OpenVocabField.load(out)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["feature_voxels"] == field.num_features > 0 and summary["peak_memory_mb"] > 0
    assert field.metadata["method"] == "pop3d" and field.shape == (200, 200, 16)
    assert main(["reconstruct", str(capture_dir), "--method", "pop3d", "--out", str(out)]) != 0
    assert "exists" in capsys.readouterr().err


def test_reconstruct_runs_on_the_real_nuscenes_sample(nuscenes_dir, tmp_path, capsys):
    """pop3d end to end on the real keyframe; fusion says which teacher weights it needs."""
    out = tmp_path / "nus.npz"
    assert main(["reconstruct", str(nuscenes_dir), "--method", "pop3d", "--out", str(out)]) == 0
    field = OpenVocabField.load(out)
    assert field.num_features > 1000 and field.colors is not None
    assert field.metadata["capture_format"] == "nuscenes-info" and len(field.metadata["cameras"]) == 6
    capsys.readouterr()
    assert main(["reconstruct", str(nuscenes_dir), "--method", "fusion", "--out", str(tmp_path / "f.npz")]) != 0
    err = capsys.readouterr().err
    assert "clip" in err.lower() and "--teacher maskclip:" in err and not (tmp_path / "f.npz").exists()


def _save_tiny_clip(folder):
    """A randomly initialised CLIP (ViT with 16-px patches, tiny text tower) with a letter-level tokenizer."""
    import torch
    import transformers

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz.":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=224, patch_size=16),
        projection_dim=24)  # fmt: skip
    torch.manual_seed(0)
    transformers.CLIPModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_fusion_runs_on_the_real_nuscenes_sample_with_a_local_clip_checkpoint(nuscenes_dir, tmp_path):
    """The real teacher path end to end (MaskCLIP + CLIP text tower from a local folder; random weights
    here, so only the geometry, colours and plumbing are meaningful)."""
    clip = tmp_path / "clip"
    _save_tiny_clip(clip)
    out = tmp_path / "fusion.npz"
    assert main(["reconstruct", str(nuscenes_dir), "--method", "fusion", "--out", str(out),
                 "--teacher", f"maskclip:{clip}", "--text-encoder", f"clip:{clip}"]) == 0
    field = OpenVocabField.load(out)
    assert field.feature_dim == 24 and field.space.startswith("clip")
    # geometry: the occupied voxels are those holding LiDAR returns (counted here independently)
    from geo3d.io import read_capture
    from geo3d.geometry.poses import invert_pose

    frame = read_capture(nuscenes_dir).frames[0]
    sweep = frame.lidar["LIDAR_TOP"]
    points = sweep.points_world() @ invert_pose(frame.ego2world)[:3, :3].T + invert_pose(frame.ego2world)[:3, 3]
    index = np.floor((points - field.origin) / field.voxel_size).astype(np.int64)
    inside = ((index >= 0) & (index < np.array(field.shape))).all(1)
    expected = np.zeros(field.shape, bool)
    expected[tuple(index[inside].T)] = True
    assert np.array_equal(field.occupancy >= 0.5, expected)
    assert main(["query", str(out), "car", "--json"]) == 0
