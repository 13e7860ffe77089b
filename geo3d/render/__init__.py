"""Rendering ops, pure PyTorch with optional nerfacc back-ends (maths, conventions, API: ``docs/render.md``).

- :mod:`geo3d.render.volume`: volume rendering along rays (transmittance, sample weights, compositing)
  for padded ``[R, S]`` and packed ``[N]`` samples.
- :mod:`geo3d.render.samplers`: samples along rays (uniform, stratified, disparity, importance /
  inverse-CDF), ray-box intersection, scene contraction for unbounded scenes, padded -> packed.
- :mod:`geo3d.render.proposal`: mip-NeRF 360's proposal-network sampler (small density fields that choose the
  samples), its interlevel loss and the distortion loss.
"""

from geo3d.render.proposal import (
    SPACINGS,
    ProposalConfig,
    ProposalDensityField,
    ProposalNetworkSampler,
    ProposalSamples,
    distortion_loss,
    interlevel_loss,
    normalized_distance,
    proposal_samples,
)
from geo3d.render.samplers import (
    CONTRACTIONS,
    AABBIntersection,
    Intervals,
    PackedIntervals,
    contract,
    disparity_samples,
    importance_samples,
    packed_from_padded,
    ray_aabb_intersect,
    uncontract,
    uniform_samples,
)
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
    "CONTRACTIONS",
    "SPACINGS",
    "AABBIntersection",
    "Intervals",
    "PackedIntervals",
    "ProposalConfig",
    "ProposalDensityField",
    "ProposalNetworkSampler",
    "ProposalSamples",
    "RenderError",
    "RenderedRays",
    "SampleWeights",
    "accumulate_along_rays",
    "contract",
    "disparity_samples",
    "distortion_loss",
    "importance_samples",
    "interlevel_loss",
    "normalized_distance",
    "packed_exclusive_cumsum",
    "packed_from_padded",
    "proposal_samples",
    "ray_aabb_intersect",
    "render_rays",
    "render_weights_from_alpha",
    "render_weights_from_density",
    "transmittance_from_alpha",
    "uncontract",
    "uniform_samples",
]
