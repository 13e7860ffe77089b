"""Volume rendering along rays: transmittance, sample weights and compositing (the NeRF quadrature).

A ray ``o + t d`` crosses a medium of density ``sigma(t)``; samples are intervals ``[t_start_i, t_end_i]``
of length ``delta_i = t_end_i - t_start_i`` with a constant density ``sigma_i`` and value ``c_i`` each:

    alpha_i = 1 - exp(-sigma_i delta_i)                 opacity of interval i
    T_i     = exp(-sum_{j<i} sigma_j delta_j)           transmittance: the chance to reach interval i
            = prod_{j<i} (1 - alpha_j)
    w_i     = T_i alpha_i                               chance to stop in interval i
    C       = sum_i w_i c_i = sum_i T_i (1 - exp(-sigma_i delta_i)) c_i
    opacity = sum_i w_i = 1 - T_after_last_sample

Units: ``t`` is a distance along the ray in metres when ``d`` has unit length (geo3d's ``Rays`` do), and
``sigma`` is then in 1/metre. With non-unit directions pass ``t * |d|``; otherwise ``sigma`` is per unit
of ``t`` and distances come out in units of ``t``. ``distance`` is the distance along the ray, not
z-depth (``depth`` in geo3d means z-depth): multiply by ``Rays.z_per_unit`` for a z-depth map
(docs/conventions.md).

Two layouts of samples (``docs/render.md``):

* padded ``[..., S]`` (usually ``[R, S]``): ``S`` samples per ray, ordered by ``t``; shorter rays are padded
  with zero density (or alpha) and ``t_end = t_start``;
* packed ``[N]`` with ``ray_indices [N]`` (int64, sorted, in ``[0, n_rays)``) and ``n_rays``: the samples of
  ray ``r`` are consecutive and ordered by ``t``; rays without samples are allowed.

Every function is pure PyTorch, differentiable (w.r.t. ``t_starts``, ``t_ends``, ``sigmas``, ``alphas``,
``values`` and ``background``), runs on any device and returns tensors in the dtype of its inputs.
Transmittance comes from an exclusive cumulative sum of ``sigma delta`` (never from a product of
``1 - alpha``, which loses precision); packed sums run in float64 by default so that long rays and many
rays do not lose precision to one global cumulative sum. ``backend="nerfacc"`` calls nerfacc 0.5.3
instead (padded on any device, packed only on CUDA); ``"auto"`` uses it for CUDA tensors when installed.
Malformed input raises :class:`RenderError` naming the argument.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings
from numbers import Integral, Real
from typing import NamedTuple

import torch
import torch.nn.functional as tF
from torch import Tensor

from geo3d.errors import Geo3dError
from geo3d.utils.optional import require

BACKENDS = ("torch", "nerfacc", "auto")
"""Values of the ``backend`` argument."""


class RenderError(Geo3dError, ValueError):
    """A volume-rendering argument is malformed: wrong shapes, dtypes or devices, NaN/inf, negative
    densities, alphas outside [0, 1], ``t_ends < t_starts``, unsorted or out-of-range ``ray_indices``,
    an unknown backend. The message names the argument and the problem."""


class SampleWeights(NamedTuple):
    """Per-sample rendering terms, each shaped like the samples (``[..., S]`` or ``[N]``).

    Attributes:
        weights: ``w_i = T_i alpha_i``, the probability that the ray stops in sample ``i``.
        transmittance: ``T_i``, the probability that the ray reaches sample ``i``.
        alphas: ``alpha_i = 1 - exp(-sigma_i delta_i)``, the opacity of sample ``i``.
    """

    weights: Tensor
    transmittance: Tensor
    alphas: Tensor


class RenderedRays(NamedTuple):
    """Composited rays (see :func:`render_rays`).

    Attributes:
        features: ``[R, C]`` ``sum_i w_i c_i`` (RGB when the values are colours), plus
            ``(1 - opacity) * background`` when a background is given.
        opacity: ``[R, 1]`` ``sum_i w_i`` in [0, 1].
        distance: ``[R, 1]`` expected stopping distance along the ray ``sum_i w_i (t_start_i + t_end_i) / 2``
            in the units of ``t`` (metres for unit directions); divided by the opacity when asked.
        weights: per-sample ``w_i`` (``[R, S]`` or ``[N]``), for losses and resampling.
    """

    features: Tensor
    opacity: Tensor
    distance: Tensor
    weights: Tensor


# --------------------------------------------------------------------------------------------- checks


def _check_tensor(tensor, name: str, floating: bool = True) -> None:
    if not isinstance(tensor, Tensor):
        raise RenderError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if floating and not tensor.is_floating_point():
        raise RenderError(f"{name} must be a floating-point tensor, got {tensor.dtype}")


def _check_layout(samples: dict, ray_indices, n_rays) -> bool:
    """Check the shapes of per-sample tensors (all shaped alike) and the packed indices; True if packed."""
    first_name, first = next(iter(samples.items()))
    for name, tensor in samples.items():
        _check_tensor(tensor, name)
        if tensor.shape != first.shape:
            raise RenderError(f"{name} must have the shape of {first_name} {list(first.shape)}, "
                              f"got {list(tensor.shape)}")
        if tensor.device != first.device:
            raise RenderError(f"{name} is on {tensor.device} but {first_name} is on {first.device}")
    if first.ndim == 0:
        raise RenderError(f"{first_name} must have shape [..., S] (padded) or [N] (packed), got a scalar")
    if ray_indices is None:
        if n_rays is not None:
            raise RenderError("n_rays is only used with ray_indices (packed samples); got ray_indices=None")
        return False
    _check_tensor(ray_indices, "ray_indices", floating=False)
    if ray_indices.dtype != torch.int64:
        raise RenderError(f"ray_indices must be int64, got {ray_indices.dtype}")
    if first.ndim != 1 or ray_indices.shape != first.shape:
        raise RenderError(f"packed samples need {first_name} [N] and ray_indices [N], got "
                          f"{list(first.shape)} and {list(ray_indices.shape)}")
    if ray_indices.device != first.device:
        raise RenderError(f"ray_indices is on {ray_indices.device} but {first_name} is on {first.device}")
    if isinstance(n_rays, bool) or not isinstance(n_rays, Integral) or n_rays < 0:
        raise RenderError(f"n_rays must be a non-negative int when ray_indices is given, got {n_rays!r}")
    return True


def _raise_if_any(problems: list[tuple[str, Tensor]]) -> None:
    """Raise for the first ``(message, bad)`` whose 0-dim bool ``bad`` is true; one device sync in all."""
    if not problems:
        return
    flags = torch.stack([bad.reshape(()) for _, bad in problems]).tolist()
    for (message, _), bad in zip(problems, flags):
        if bad:
            raise RenderError(message)


def _value_problems(tensor: Tensor, name: str, low: float | None = None, high: float | None = None,
                    what: str = "") -> list[tuple[str, Tensor]]:
    """NaN/inf and range checks from one ``aminmax`` pass (NaN propagates to both; ~10x cheaper than
    ``isfinite(x).all()`` on a CPU)."""
    if tensor.numel() == 0:
        return []
    lo, hi = torch.aminmax(tensor.detach())
    problems = [(f"{name} holds NaN or inf", ~(torch.isfinite(lo) & torch.isfinite(hi)))]
    if low is not None:
        problems.append((f"{name} must be >= {low}{what}", lo < low))
    if high is not None:
        problems.append((f"{name} must be <= {high}{what}", hi > high))
    return problems


def _index_problems(ray_indices: Tensor, n_rays: int, sorted_: bool = True) -> list[tuple[str, Tensor]]:
    if ray_indices.numel() == 0:
        return []
    lo, hi = torch.aminmax(ray_indices)
    problems = [(f"ray_indices must be in [0, n_rays={n_rays})", (lo < 0) | (hi >= n_rays))]
    if sorted_ and ray_indices.numel() > 1:
        problems.append(("ray_indices must be sorted (the samples of each ray consecutive)",
                         (ray_indices[1:] - ray_indices[:-1]).amin() < 0))
    return problems


def _interval_problems(t_starts: Tensor, t_ends: Tensor) -> list[tuple[str, Tensor]]:
    if t_starts.numel() == 0:
        return []
    lengths = (t_ends.detach() - t_starts.detach()).amin() < 0
    return [*_value_problems(t_starts, "t_starts"), *_value_problems(t_ends, "t_ends"),
            ("t_ends must be >= t_starts", lengths)]


# ------------------------------------------------------------------------------------------- backends


def _nerfacc_for(backend: str, like: Tensor, packed: bool):
    """The nerfacc module if ``backend`` asks for it on these tensors, else None."""
    if backend not in BACKENDS:
        raise RenderError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch" or (backend == "auto" and not (like.is_cuda and _nerfacc_usable(packed))):
        return None
    if packed and not like.is_cuda:
        raise RenderError("backend='nerfacc' runs packed samples (ray_indices) only on CUDA tensors; "
                          "use backend='torch' or 'auto' for CPU tensors")
    return require("nerfacc")


def _nerfacc_usable(packed: bool) -> bool:
    if importlib.util.find_spec("nerfacc") is None:
        return False
    return _nerfacc_kernels_load() if packed else True


@functools.cache
def _nerfacc_kernels_load() -> bool:
    """Whether nerfacc's CUDA extension loads (compiled on the first call: minutes, once per machine)."""
    try:
        return importlib.import_module("nerfacc.cuda._backend")._C is not None
    except Exception as exc:  # a failed JIT build raises many kinds of errors
        warnings.warn(f"nerfacc's CUDA kernels do not load ({exc}); backend='auto' uses the torch path",
                      RuntimeWarning, stacklevel=3)
        return False


# ------------------------------------------------------------------------------------------ cumsums


def _padded_exclusive_cumsum(values: Tensor) -> Tensor:
    """``out[..., i] = sum_{j<i} values[..., j]`` along the last dimension."""
    return torch.cumsum(tF.pad(values, (1, 0))[..., :-1], dim=-1)


def _ray_first_sample(ray_indices: Tensor, n_rays: int) -> Tensor:
    """``[N]`` flat index of the first sample of each sample's ray (``ray_indices`` sorted)."""
    counts = torch.zeros(n_rays, dtype=torch.int64, device=ray_indices.device)
    counts.index_add_(0, ray_indices, torch.ones_like(ray_indices))
    return (torch.cumsum(counts, 0) - counts)[ray_indices]


def _packed_exclusive_cumsum(values: Tensor, ray_indices: Tensor, n_rays: int, accumulate_dtype) -> Tensor:
    summed = values if accumulate_dtype is None else values.to(accumulate_dtype)
    exclusive = tF.pad(torch.cumsum(summed, 0), (1, 0))[:-1]  # global: sum of all earlier samples
    return (exclusive - exclusive[_ray_first_sample(ray_indices, n_rays)]).to(values.dtype)


def packed_exclusive_cumsum(values: Tensor, ray_indices: Tensor, n_rays: int, *,
                            accumulate_dtype: torch.dtype | None = torch.float64, check: bool = True) -> Tensor:
    """Per-ray exclusive cumulative sum of packed samples: ``out_i = sum of values_j, j < i, same ray``.

    Computed with plain torch ops as the global cumulative sum minus its value at each ray's first sample.
    The global sum grows over all rays, so in float32 a dense ray would swamp the sums of the rays after it
    (at a running total of 1e6, float32 resolves 0.06): the sum therefore runs in ``accumulate_dtype``
    (float64 by default, ``None`` = the dtype of ``values``) and is cast back.

    Args:
        values: ``[N]`` float per-sample values.
        ray_indices: ``[N]`` int64 ray of each sample, sorted, in ``[0, n_rays)``.
        n_rays: number of rays.
        accumulate_dtype: dtype of the running sum.
        check: check values (NaN/inf, index order and range); costs one device sync.

    Returns:
        ``[N]`` in the dtype of ``values``; differentiable w.r.t. ``values``.
    """
    if ray_indices is None:
        raise RenderError("ray_indices is required: packed_exclusive_cumsum works on packed samples")
    _check_layout({"values": values}, ray_indices, n_rays)
    if check:
        _raise_if_any([*_value_problems(values, "values"), *_index_problems(ray_indices, n_rays)])
    return _packed_exclusive_cumsum(values, ray_indices, n_rays, accumulate_dtype)


# -------------------------------------------------------------------------------------------- weights


def transmittance_from_alpha(alphas: Tensor, ray_indices: Tensor | None = None, n_rays: int | None = None, *,
                             backend: str = "torch", check: bool = True) -> Tensor:
    """Transmittance ``T_i = prod_{j<i} (1 - alpha_j)`` of samples given by their opacities.

    Args:
        alphas: ``[..., S]`` (padded) or ``[N]`` (packed) opacities in [0, 1].
        ray_indices, n_rays: ``[N]`` int64 sorted ray of each sample and the ray count (packed only).
        backend: ``"torch"``, ``"nerfacc"`` or ``"auto"`` (module docstring).
        check: check values (NaN, range, index order); costs one device sync.

    Returns:
        ``T`` shaped like ``alphas``. Padded: ``torch.cumprod`` (exact gradients, alpha = 1 included).
        Packed: ``exp(-exclusive_cumsum(-log(1 - alpha)))`` in float64 with ``alpha`` clamped to
        ``1 - 2.2e-16``, so an opaque sample leaves ``T <= 1e-15`` behind it and passes no gradient back
        through the samples after it.
    """
    packed = _check_layout({"alphas": alphas}, ray_indices, n_rays)
    nerfacc = _nerfacc_for(backend, alphas, packed)
    if check:
        problems = _value_problems(alphas, "alphas", 0.0, 1.0, " (opacities)")
        _raise_if_any(problems + (_index_problems(ray_indices, n_rays) if packed else []))
    if nerfacc is not None:
        return nerfacc.render_transmittance_from_alpha(alphas, ray_indices=ray_indices, n_rays=n_rays)
    if not packed:
        return torch.cumprod(tF.pad(1.0 - alphas, (1, 0), value=1.0)[..., :-1], dim=-1)
    alphas64 = alphas.to(torch.float64).clamp(max=1.0 - torch.finfo(torch.float64).eps)
    optical = _packed_exclusive_cumsum(-torch.log1p(-alphas64), ray_indices, n_rays, None)
    return torch.exp(-optical).to(alphas.dtype)


def render_weights_from_alpha(alphas: Tensor, ray_indices: Tensor | None = None, n_rays: int | None = None, *,
                              backend: str = "torch", check: bool = True) -> SampleWeights:
    """Weights ``w_i = T_i alpha_i`` of samples given by their opacities (arguments of
    :func:`transmittance_from_alpha`).

    Returns:
        ``SampleWeights(weights, transmittance, alphas)``, each shaped like ``alphas`` (``alphas`` is the input).
    """
    transmittance = transmittance_from_alpha(alphas, ray_indices, n_rays, backend=backend, check=check)
    return SampleWeights(transmittance * alphas, transmittance, alphas)


def render_weights_from_density(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor | None = None,
                                n_rays: int | None = None, *, backend: str = "torch", check: bool = True,
                                accumulate_dtype: torch.dtype | None = torch.float64) -> SampleWeights:
    """Weights of samples given by their intervals and densities.

    ``alpha_i = 1 - exp(-sigma_i delta_i)``, ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` (an exclusive cumulative
    sum, not a product of ``1 - alpha``), ``w_i = T_i alpha_i``, with ``delta_i = t_end_i - t_start_i``.

    Args:
        t_starts, t_ends: ``[..., S]`` (padded) or ``[N]`` (packed) sample intervals along the ray, metres
            for unit directions (module docstring), ordered along each ray; ``t_ends >= t_starts``.
        sigmas: densities ``>= 0`` (1/metre), shaped like ``t_starts``.
        ray_indices, n_rays: ``[N]`` int64 sorted ray of each sample and the ray count (packed only).
        backend: ``"torch"``, ``"nerfacc"`` or ``"auto"`` (module docstring).
        check: check values (NaN/inf, negative densities, ``t_ends < t_starts``, index order); one device sync.
        accumulate_dtype: dtype of the packed cumulative sum (float64 by default, ``None`` = input dtype).

    Returns:
        ``SampleWeights(weights, transmittance, alphas)``, each shaped like ``sigmas``.
    """
    packed = _check_layout({"t_starts": t_starts, "t_ends": t_ends, "sigmas": sigmas}, ray_indices, n_rays)
    nerfacc = _nerfacc_for(backend, sigmas, packed)
    if check:
        problems = [*_interval_problems(t_starts, t_ends), *_value_problems(sigmas, "sigmas", 0.0, what=" (densities)")]
        _raise_if_any(problems + (_index_problems(ray_indices, n_rays) if packed else []))
    if nerfacc is not None:
        weights, transmittance, alphas = nerfacc.render_weight_from_density(
            t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays)
        return SampleWeights(weights, transmittance, alphas)
    optical_depth = sigmas * (t_ends - t_starts)
    if packed:
        before = _packed_exclusive_cumsum(optical_depth, ray_indices, n_rays, accumulate_dtype)
    else:
        before = _padded_exclusive_cumsum(optical_depth)
    transmittance = torch.exp(-before)
    alphas = -torch.expm1(-optical_depth)
    return SampleWeights(transmittance * alphas, transmittance, alphas)


# ----------------------------------------------------------------------------------------- compositing


def accumulate_along_rays(weights: Tensor, values: Tensor | None = None, ray_indices: Tensor | None = None,
                          n_rays: int | None = None, *, check: bool = True) -> Tensor:
    """``sum_i w_i v_i`` per ray.

    Args:
        weights: ``[..., S]`` (padded) or ``[N]`` (packed) sample weights.
        values: ``[..., S, C]`` or ``[N, C]`` per-sample values; None accumulates the weights (opacity).
        ray_indices, n_rays: ``[N]`` int64 ray of each sample (any order here) and the ray count (packed).
        check: check values (NaN/inf, index range); costs one device sync.

    Returns:
        ``[..., C]`` (padded) or ``[n_rays, C]`` (packed); ``C = 1`` when ``values`` is None.
        Rays without samples get 0.
    """
    packed = _check_layout({"weights": weights}, ray_indices, n_rays)
    if values is not None:
        _check_tensor(values, "values")
        if values.shape[:-1] != weights.shape or values.ndim != weights.ndim + 1 or values.device != weights.device:
            raise RenderError(f"values must have shape {list(weights.shape)} + [C] on {weights.device} "
                              f"(those of weights plus channels), got {list(values.shape)} on {values.device}")
    if check:
        problems = _value_problems(weights, "weights") + ([] if values is None else _value_problems(values, "values"))
        _raise_if_any(problems + (_index_problems(ray_indices, n_rays, sorted_=False) if packed else []))
    weighted = weights[..., None] if values is None else weights[..., None] * values
    if not packed:
        return weighted.sum(dim=-2)
    zeros = weighted.new_zeros((n_rays, weighted.shape[-1]))
    return zeros.index_add(0, ray_indices, weighted)


def render_rays(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, values: Tensor, ray_indices: Tensor | None = None,
                n_rays: int | None = None, *, background: Tensor | float | None = None,
                normalize_distance: bool = False, backend: str = "torch", check: bool = True) -> RenderedRays:
    """Composite per-sample densities and values into per-ray features, opacity and expected distance.

    ``features = sum_i T_i (1 - exp(-sigma_i delta_i)) c_i + (1 - opacity) * background``,
    ``opacity = sum_i w_i``, ``distance = sum_i w_i (t_start_i + t_end_i) / 2`` (divided by ``opacity`` when
    ``normalize_distance``; 0 where the opacity is 0).

    Args:
        t_starts, t_ends, sigmas, ray_indices, n_rays, backend, check: as in :func:`render_weights_from_density`
            (padded ``[R, S]`` or packed ``[N]``).
        values: ``[R, S, C]`` or ``[N, C]`` per-sample values (colours, features).
        background: None (black), a float, or a tensor broadcastable to ``[R, C]`` (``[C]`` or ``[R, C]``).
        normalize_distance: return the expected distance of the rays that stop, not the unnormalised sum.

    Returns:
        ``RenderedRays(features [R, C], opacity [R, 1], distance [R, 1], weights)``.
    """
    weights = render_weights_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays,
                                          backend=backend, check=check).weights
    features = accumulate_along_rays(weights, values, ray_indices, n_rays, check=check)
    opacity = accumulate_along_rays(weights, None, ray_indices, n_rays, check=False)
    midpoints = (t_starts + t_ends)[..., None] / 2
    distance = accumulate_along_rays(weights, midpoints, ray_indices, n_rays, check=False)
    if normalize_distance:
        distance = distance / opacity.clamp_min(torch.finfo(opacity.dtype).tiny)
    if background is not None:
        if isinstance(background, Real) and not isinstance(background, bool):
            background = torch.tensor(float(background), dtype=features.dtype, device=features.device)
        _check_tensor(background, "background")
        try:
            shape = torch.broadcast_shapes(background.shape, features.shape)
        except RuntimeError:
            shape = None
        if shape != features.shape or background.device != features.device:
            raise RenderError(f"background must broadcast to features {list(features.shape)} on {features.device}, "
                              f"got {list(background.shape)} on {background.device}")
        features = features + (1.0 - opacity) * background
    return RenderedRays(features, opacity, distance, weights)
