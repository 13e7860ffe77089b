"""``geo3d train sdf``: the tiny preset on a small watertight mesh (metrics against it) and on the
built-in analytic shape, --resume, and bad input exiting non-zero with a one-line message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geo3d.sdf.neural import NeuralSDF
from geo3d.structures.mesh import TriangleMesh, read_mesh
from geo3d_apps.cli import main

TINY = ["--config", "tiny"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sphere_mesh(tmp_path_factory):
    trimesh = pytest.importorskip("trimesh")
    path = tmp_path_factory.mktemp("mesh") / "sphere.ply"
    TriangleMesh.from_trimesh(trimesh.creation.icosphere(subdivisions=3, radius=0.4)).save(path)
    return path


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory, sphere_mesh):
    out = tmp_path_factory.mktemp("sdf") / "run"
    assert main(["train", "sdf", *TINY, "--mesh", str(sphere_mesh), "--out", str(out), "--steps", "150"]) == 0
    return out


def test_mesh_run_writes_valid_outputs(mesh_run, sphere_mesh):
    metrics = json.loads((mesh_run / "metrics.json").read_text())
    assert metrics["faces"] > 100 and metrics["fit_seconds"] > 0
    # a sphere of radius 0.4 at 48^3: the fit is coarse but close
    assert metrics["chamfer_l1_percent_diagonal"] < 2.0 and metrics["normal_consistency"] > 0.9
    mesh = read_mesh(mesh_run / "mesh.ply")
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(radii) - 0.4) < 0.02
    saved = torch.load(mesh_run / "model.pt", weights_only=False)
    model = NeuralSDF.from_checkpoint(saved["model"])
    with torch.no_grad():
        values = model(torch.tensor([[0.0, 0.0, 0.0], [0.7, 0.0, 0.0]]))
    assert values[0] < 0 < values[1]
    from PIL import Image

    image = np.asarray(Image.open(mesh_run / "preview.png"))
    assert image.shape == (64, 2 * 64 + 4, 3)
    left = image[:, :64]
    assert (left != 255).any(axis=-1).mean() > 0.1  # the rendered shape covers part of the panel


def test_resume_reuses_the_model(mesh_run, sphere_mesh, capsys):
    before = (mesh_run / "model.pt").read_bytes()
    assert main(["train", "sdf", *TINY, "--mesh", str(sphere_mesh), "--out", str(mesh_run), "--steps", "150",
                 "--resume", "--resolution", "40"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert (mesh_run / "model.pt").read_bytes() == before
    assert json.loads((mesh_run / "metrics.json").read_text())["resolution"] == 40


def test_builtin_shape_without_mesh(tmp_path):
    out = tmp_path / "builtin"
    assert main(["train", "sdf", *TINY, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mesh"] == "builtin" and "chamfer_l1" not in metrics and metrics["faces"] > 0
    assert (out / "mesh.ply").is_file() and (out / "preview.png").is_file() and (out / "model.pt").is_file()


def test_bad_input_exits_non_zero(tmp_path, capsys):
    assert main(["train", "sdf", *TINY, "--mesh", str(tmp_path / "missing.ply"), "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert "file not found" in err and len(err.splitlines()) == 1
    trimesh = pytest.importorskip("trimesh")
    open_mesh = trimesh.creation.icosphere(subdivisions=1)
    open_mesh.update_faces(np.arange(len(open_mesh.faces)) > 3)
    path = tmp_path / "open.ply"
    TriangleMesh.from_trimesh(open_mesh).save(path)
    assert main(["train", "sdf", *TINY, "--mesh", str(path), "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip()
    assert "watertight" in err and len(err.splitlines()) == 1
    assert main(["train", "sdf", *TINY, "--resolution", "4", "--out", str(tmp_path / "c")]) == 1
    assert "--resolution" in capsys.readouterr().err
    assert main(["train", "sdf", *TINY, "--steps", "0", "--out", str(tmp_path / "d")]) == 1
    assert "steps" in capsys.readouterr().err


def test_task_is_listed(capsys):
    assert main(["train", "--help"]) == 0
    assert "sdf" in capsys.readouterr().out
