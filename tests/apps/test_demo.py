import json
import re

import numpy as np
from PIL import Image

from geo3d.structures.field import OpenVocabField
from geo3d_apps.cli import main


def test_demo_runs_end_to_end_on_the_quick_preset(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--config", "quick", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["width"] == 200 and summary["capture"]["frames"] == 1
    assert summary["best_method"] == "fusion" and list(summary["methods"]) == ["fusion"]
    # the capture on disk is complete and readable
    assert main(["info", str(out / "capture"), "--json"]) == 0
    capsys.readouterr()
    field = OpenVocabField.load(out / "fusion.field.npz")
    method = summary["methods"]["fusion"]
    assert method["feature_voxels"] == field.num_features > 500
    # the scores are recomputed from the saved field and the capture's ground truth
    from geo3d.fields.scoring import query_voxel_scores
    from geo3d.io import read_capture
    from geo3d.synthetic.classes import CLASS_IDS
    from geo3d_apps.demo import score_queries

    occupancy = read_capture(out / "capture").frames[0].occupancy
    gt, visible = occupancy.load_semantics(), occupancy.load_mask("camera")
    from geo3d.language import get_text_encoder

    results, scores = score_queries(field, get_text_encoder("minilm"), ["road"], gt, visible)
    manual = query_voxel_scores(field, results[0].selected, gt, [CLASS_IDS["driveable_surface"]], visible)
    assert abs(method["queries"]["road"]["scores"]["iou"] - manual.iou) < 1e-9 and manual.iou > 0.2
    # the report embeds pictures that exist and are not blank
    report = (out / "report.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(pictures) == 2 + len(summary["queries"])
    for name in pictures:
        image = np.asarray(Image.open(out / name).convert("RGB"))
        assert image.shape[1] >= 480 and len(np.unique(image.reshape(-1, 3), axis=0)) > 20
    assert "| road |" in report and "Best method" in report
    assert not list(tmp_path.glob("**/*.tmp"))
