"""The layering rules of docs/architecture.md, checked on the source, and `import geo3d` cost."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GEO3D = REPO / "geo3d"

# package -> layer (docs/architecture.md)
LAYERS = {
    "errors": 0, "geometry": 0, "utils": 0,
    "structures": 1,
    "cameras": 2, "points": 2, "render": 2, "nn": 2, "sdf": 2, "voxels": 2,
    "io": 3,
    "synthetic": 4,
    "fields": 5, "language": 5, "occupancy": 5, "nerf": 5, "splat": 5, "models": 5, "training": 5,
}  # fmt: skip
HEAVY = {"open3d", "gsplat", "nerfacc", "pytorch3d", "open_clip", "transformers"}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at_module_level) for every import in a file."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports inside `if TYPE_CHECKING:` / try blocks at module level count too
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top_level))
    return found


def _package(path: Path) -> str:
    rel = path.relative_to(GEO3D)
    return rel.parts[0].removesuffix(".py")


def test_geo3d_never_imports_apps_and_layers_go_down():
    problems = []
    for path in GEO3D.rglob("*.py"):
        own = _package(path)
        for module, _ in _imports(path):
            root = module.split(".")[0]
            if root in ("apps", "geo3d_apps"):
                problems.append(f"{path}: imports {module}")
            if root == "geo3d" and "." in module:
                target = module.split(".")[1]
                if own in LAYERS and target in LAYERS and LAYERS[target] > LAYERS[own]:
                    problems.append(f"{path} (layer {LAYERS[own]}) imports {module} (layer {LAYERS[target]})")
    assert not problems, "\n".join(problems)


def test_every_package_has_a_layer():
    packages = {p.name for p in GEO3D.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in GEO3D.glob("*.py") if p.stem != "__init__"}
    assert packages <= set(LAYERS), f"add {sorted(packages - set(LAYERS))} to LAYERS and docs/architecture.md"


def test_heavy_backends_are_never_imported_at_module_level():
    problems = [
        f"{path}: {module}"
        for path in list(GEO3D.rglob("*.py")) + list((REPO / "apps").rglob("*.py"))
        for module, top in _imports(path)
        if top and module.split(".")[0] in HEAVY
    ]
    assert not problems, "import these lazily (geo3d.utils.optional.require):\n" + "\n".join(problems)


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout


def test_import_geo3d_is_fast_and_light():
    code = (
        "import time, sys, json; t = time.perf_counter(); import geo3d; dt = time.perf_counter() - t; "
        "print(json.dumps({'seconds': dt, 'modules': sorted(sys.modules)}))"
    )
    # best of three fresh interpreters: the first may pay for a cold disk cache
    runs = [json.loads(_fresh_python(code)) for _ in range(3)]
    best = min(r["seconds"] for r in runs)
    assert best < 1.5, f"import geo3d took {best:.2f} s"
    modules = set(runs[0]["modules"])
    for heavy in ("open3d", "open_clip", "torch", "gsplat", "nerfacc", "transformers"):
        assert heavy not in modules, f"import geo3d imported {heavy}"


def test_geo3d_help_does_not_import_torch():
    code = (
        "import sys, io, contextlib\nfrom geo3d_apps.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out: code = main(['--help'])\n"
        "print(code, 'torch' in sys.modules, 'open3d' in sys.modules)\nprint(out.getvalue())"
    )
    first, *rest = _fresh_python(code).splitlines()
    assert first == "0 False False"
    assert "info" in "\n".join(rest) and "demo" in "\n".join(rest)


def test_pyproject_lists_every_package():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.relative_to(REPO).parts[:-1]) for p in GEO3D.rglob("__init__.py") if "__pycache__" not in p.parts
    }
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
