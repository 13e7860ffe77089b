"""Rendering ops. :mod:`geo3d.render.volume`: volume rendering along rays (transmittance, sample weights,
compositing) for padded ``[R, S]`` and packed ``[N]`` samples, pure PyTorch with an optional nerfacc
back-end. Maths, conventions and the API table: ``docs/render.md``.
"""

from geo3d.render.volume import (
    BACKENDS,
    RenderedRays,
    RenderError,
    SampleWeights,
    accumulate_along_rays,
    packed_exclusive_cumsum,
    render_rays,
    render_weights_from_alpha,
    render_weights_from_density,
    transmittance_from_alpha,
)

__all__ = [
    "BACKENDS",
    "RenderError",
    "RenderedRays",
    "SampleWeights",
    "accumulate_along_rays",
    "packed_exclusive_cumsum",
    "render_rays",
    "render_weights_from_alpha",
    "render_weights_from_density",
    "transmittance_from_alpha",
]
