"""Neural radiance fields (issue 8): fields, occupancy-grid sampling, rendering, training, metrics, exports.

- :mod:`geo3d.nerf.fields`: :class:`DenseGridField` (the CPU default), :class:`HashGridField`, :class:`MLPField`.
- :mod:`geo3d.nerf.estimator`: :class:`OccupancyGridEstimator` (empty-space skipping, sample pruning).
- :mod:`geo3d.nerf.renderer`: :func:`render_field_rays`, :func:`render_image`.
- :mod:`geo3d.nerf.data`: training rays of a capture; :mod:`geo3d.nerf.trainer`: :class:`NerfTrainer`.
- :mod:`geo3d.nerf.metrics`, :mod:`geo3d.nerf.export`: PSNR/SSIM/LPIPS; depth, points, mesh, occupancy.

The rendering maths lives in :mod:`geo3d.render`; the design and the measurements in ``docs/nerf.md``.
"""

from geo3d.nerf.estimator import OccupancyGridEstimator, PackedSamples
from geo3d.nerf.fields import FIELDS, DenseGridField, FieldOutput, HashGridField, MLPField, RadianceField
from geo3d.nerf.renderer import FieldRender, RenderedImage, render_field_rays, render_image

__all__ = [
    "FIELDS",
    "DenseGridField",
    "FieldOutput",
    "FieldRender",
    "HashGridField",
    "MLPField",
    "OccupancyGridEstimator",
    "PackedSamples",
    "RadianceField",
    "RenderedImage",
    "render_field_rays",
    "render_image",
]
