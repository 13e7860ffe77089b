import json

import numpy as np
import trimesh

from geo3d_apps.cli import main
from geo3d_apps.demo import voxel_fuse


def test_voxel_fuse_matches_a_dictionary_brute_force():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (500, 3))
    colors = rng.integers(0, 256, (500, 3)).astype(np.uint8)
    labels = rng.integers(0, 4, 500)
    out_points, out_colors, out_labels, counts = voxel_fuse(points, colors, labels, 0.5)
    groups: dict = {}
    for p, c, lab in zip(points, colors, labels):
        groups.setdefault(tuple(np.floor(p / 0.5).astype(int)), []).append((p, c, lab))
    assert len(groups) == len(out_points) == counts.size and counts.sum() == 500
    for p_mean, c_mean, lab, n in zip(out_points, out_colors, out_labels, counts):
        members = groups[tuple(np.floor(p_mean / 0.5).astype(int))]
        assert len(members) == n
        np.testing.assert_allclose(p_mean, np.mean([m[0] for m in members], axis=0), atol=1e-12)
        np.testing.assert_allclose(c_mean, np.round(np.mean([m[1] for m in members], axis=0)), atol=0.5)
        votes = np.bincount([m[2] for m in members], minlength=4)
        assert votes[lab] == votes.max()


def test_demo_runs_end_to_end_on_the_quick_preset(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--config", "quick", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["width"] == 200 and summary["capture"]["frames"] == 1
    # the capture on disk is complete and readable
    assert main(["info", str(out / "capture"), "--json"]) == 0
    capsys.readouterr()
    # the sensors agree: LiDAR depth vs camera depth, and the fused cloud vs LiDAR
    assert summary["sensor_agreement"]["median_rel_diff"] < 0.01
    assert summary["fused"]["median_distance_to_fused_m"] < 0.2
    assert summary["fused"]["label_agreement"] > 0.85
    cloud = trimesh.load(out / "fused_rgb.ply")
    assert len(cloud.vertices) == summary["fused"]["voxels"] > 1000
    assert not list(tmp_path.glob("**/*.tmp"))
