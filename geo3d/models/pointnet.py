"""PointNet (Qi et al., CVPR 2017): classification and segmentation of point clouds.

Layers, at the paper's sizes (``width = 64``; every size below scales with ``width / 64``):

- **Shared per-point MLP**: the same ``Linear -> BatchNorm -> ReLU`` applied to every point
  (the paper's "mlp"; a 1x1 convolution). Linears that feed a BatchNorm have no bias (it would
  cancel).
- **Input transform** (optional): a :class:`TransformNet` predicts a 3x3 matrix per cloud from the
  xyz coordinates, applied as ``xyz @ T`` (row vectors). Extra channels (normals, ...) pass through
  unchanged.
- **Per-point MLP (64, 64)**, then the **feature transform** (optional): a 64x64 :class:`TransformNet`
  applied as ``features @ T``; :func:`orthogonality_regularizer` keeps it near orthogonal.
- **Per-point MLP (64, 128, 1024)** and a **max pool** over each cloud's points: the global
  feature ``[B, 1024]``, invariant to the order of the points.
- Classification head: ``FC(512) -> FC(256) -> dropout(0.3) -> FC(num_classes)`` (BatchNorm and
  ReLU after the hidden layers; dropout 0.3 is the paper's keep ratio 0.7).
- Segmentation head: per-point ``[64-d feature, global feature]`` (1088 channels) through the
  per-point MLP (512, 256, 128, 128) and a last ``Linear`` to per-point class logits.

Batches are padded: ``points [B, N, C]`` channels-last with optional ``lengths [B]`` (cloud ``b`` is
``points[b, :lengths[b]]``; the padding is ignored, whatever it holds). Internally the per-point
layers run on the valid points only, packed ``[P, C]`` with ``P = sum(lengths)``, so BatchNorm
statistics and max pools never see padding and a padded batch gives the same result as its clouds
run one by one (in eval mode; in train mode BatchNorm statistics are over the batch's valid points).

Fast path: the last per-point layer before each max pool (``128 -> 1024``) is
:class:`MaxPooledPointLayer`, which computes ``max_points(relu(bn(x @ W^T)))`` without keeping the
``[P, 1024]`` activations: BatchNorm's statistics come from the ``[128, 128]`` covariance of the
inputs, the pool picks the per-channel max (or min, where the BatchNorm scale is negative) of
``x @ W^T``, and the backward pass uses the same algebra. It equals the plain composition (the
reference, ``fused=False``) in values and gradients, and is several times faster on a CPU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from geo3d.errors import PointCloudError

__all__ = [
    "MaxPooledPointLayer", "PointLayout", "PointNetClassifier", "PointNetEncoder", "PointNetFeatures",
    "PointNetSegmenter", "TransformNet", "max_pooled_point_layer_reference", "orthogonality_regularizer",
    "point_layout",
]  # fmt: skip


class PointLayout(NamedTuple):
    """Where the valid points of a padded batch are: the two views of a ragged batch side by side.

    ========  =================  ==============================================================
    view      shape              rows
    ========  =================  ==============================================================
    padded    ``[B, N, C]``      cloud ``b`` is ``padded[b, :lengths[b]]``; the rest is padding
    packed    ``[P, C]``         the valid points, cloud after cloud; ``P = sum(lengths)``
    ========  =================  ==============================================================

    Made by :func:`point_layout`, which also checks the batch. When every cloud has ``N`` points,
    ``lengths`` and ``valid`` are None and both views are reshapes of one another (no copy).
    """

    batch: int
    num_points: int
    lengths: torch.Tensor | None  # [B] int64, None when every cloud has N points
    valid: torch.Tensor | None  # [B, N] bool, None when every cloud has N points

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """``[B, N, C]`` -> ``[P, C]`` valid rows, cloud after cloud."""
        if self.valid is None:
            return padded.reshape(self.batch * self.num_points, padded.shape[-1])
        return padded[self.valid]

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """``[P, C]`` -> ``[B, N, C]`` with zeros at the padding."""
        if self.valid is None:
            return packed.reshape(self.batch, self.num_points, packed.shape[-1])
        padded = packed.new_zeros(self.batch, self.num_points, packed.shape[-1])
        padded[self.valid] = packed
        return padded

    def transform(self, packed: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """Row vectors of each cloud times its matrix: ``[P, k]``, ``[B, k, k]`` -> ``[P, k]``."""
        return self.pack(torch.bmm(self.unpack(packed), matrix))


def point_layout(points: torch.Tensor, lengths: torch.Tensor | None, channels: int, name: str = "points"
                 ) -> PointLayout:
    """Check a padded batch ``points [B, N, C]`` (``C == channels``) and its optional ``lengths [B]``
    (each in ``[1, N]``; valid points must be finite, padding may hold anything).

    Raises:
        PointCloudError: wrong type, shape, channel count or dtype, bad lengths, NaN/inf in valid points.
    """
    if not isinstance(points, torch.Tensor):
        raise PointCloudError(f"{name}: expected a tensor [B, N, C], got {type(points).__name__}")
    if points.ndim != 3:
        raise PointCloudError(f"{name}: expected [B, N, C] (a batch of clouds, channels last), got shape "
                              f"{tuple(points.shape)}")
    batch, num_points, got = points.shape
    if got != channels:
        raise PointCloudError(f"{name}: expected {channels} channels per point (last dim), got {got}")
    if batch == 0 or num_points == 0:
        raise PointCloudError(f"{name}: empty batch (shape {tuple(points.shape)})")
    if not points.dtype.is_floating_point:
        raise PointCloudError(f"{name}: expected floating-point coordinates, got {points.dtype}")
    valid = lens = None
    if lengths is not None:
        lens = torch.as_tensor(lengths, device=points.device)
        if lens.shape != (batch,) or lens.dtype.is_floating_point or lens.dtype == torch.bool:
            raise PointCloudError(f"{name}: lengths must be [{batch}] integers (one per cloud), got "
                                  f"{tuple(lens.shape)} {lens.dtype}")
        lens = lens.to(torch.int64)
        if int(lens.min()) < 1 or int(lens.max()) > num_points:
            raise PointCloudError(f"{name}: lengths must lie in [1, {num_points}], got {lens.tolist()}")
        if int(lens.min()) < num_points:
            valid = torch.arange(num_points, device=points.device)[None, :] < lens[:, None]
        else:
            lens = None
    finite = torch.isfinite(points).all(dim=-1)
    if valid is not None:
        finite |= ~valid
    if not bool(finite.all()):
        b, i = (int(v) for v in (~finite).nonzero()[0])
        count = int((~finite).sum())
        raise PointCloudError(f"{name}: {count} point(s) hold NaN or inf (first: cloud {b}, point {i})")
    return PointLayout(batch, num_points, lens, valid)


def _mlp(widths: list[int]) -> nn.Sequential:
    """Shared per-point (or fully connected) layers ``Linear -> BatchNorm -> ReLU`` through ``widths``."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------------
# The fused last layer: Linear -> BatchNorm -> ReLU -> max pool
# ---------------------------------------------------------------------------------------------------
class _MaxPooledPointLayerFunction(torch.autograd.Function):
    """``relu(bn(x @ W^T))`` max-pooled per cloud, without storing the ``[P, K]`` activations.

    With ``z = x @ W^T`` and BatchNorm ``y = gamma * (z - mu) * inv_std + beta`` (per channel),
    ``max_p relu(y_p) = relu(max_p y_p)`` and ``max_p y_p`` is ``y`` at ``max_p z`` where
    ``gamma >= 0`` and at ``min_p z`` elsewhere. In train mode ``mu = mean(x) @ W^T`` and
    ``var = diag(W cov(x) W^T)`` (biased, over the valid points). The gradient of BatchNorm,
    ``dz = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))`` with ``dxhat`` non-zero only at
    the pooled points, is applied to ``x`` and ``W`` through ``cov(x)`` without forming ``dz``.
    """

    @staticmethod
    def forward(ctx, x, weight, gamma, beta, running_mean, running_var, layout, training, momentum, eps):
        num_rows = x.shape[0]
        sign = torch.where(gamma >= 0, 1.0, -1.0).to(x.dtype)
        if training:
            mean_x = x.mean(0)
            centred = x - mean_x
            cov = centred.T @ centred / num_rows
            mean = weight @ mean_x
            var = ((weight @ cov) * weight).sum(1).clamp_min(0.0)
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean)
                running_var.mul_(1 - momentum).add_(momentum * var * num_rows / (num_rows - 1))
        else:
            mean_x = cov = None
            mean, var = running_mean.to(x.dtype), running_var.to(x.dtype)
        inv_std = torch.rsqrt(var + eps)
        # per cloud, per channel: the row of x where sign * z is largest (packed row index)
        signed_weight = weight * sign[:, None]
        padded = layout.unpack(x).transpose(1, 2)  # [B, C_in, N]: z as [K, N] per cloud, reduced along N
        best = x.new_empty(layout.batch, weight.shape[0])
        index = torch.empty(layout.batch, weight.shape[0], dtype=torch.int64, device=x.device)
        chunk = max(1, (1 << 23) // max(1, layout.num_points * weight.shape[0]))  # ~32 MB of z at a time
        for start in range(0, layout.batch, chunk):
            z = signed_weight @ padded[start : start + chunk]
            if layout.valid is not None:
                z.masked_fill_(~layout.valid[start : start + chunk, None, :], float("-inf"))
            best[start : start + chunk], index[start : start + chunk] = z.max(dim=2)
        if layout.lengths is not None:
            index += (torch.cumsum(layout.lengths, 0) - layout.lengths)[:, None]
        else:
            index += torch.arange(layout.batch, device=x.device)[:, None] * layout.num_points
        normalized = (best * sign - mean) * inv_std  # [B, K] xhat at the pooled points
        pre = gamma * normalized + beta
        ctx.save_for_backward(x, weight, gamma, inv_std, normalized, pre > 0, index,
                              *((mean_x, cov) if training else ()))
        ctx.training = training
        return torch.relu(pre)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight, gamma, inv_std, normalized, active, index, *stats = ctx.saved_tensors
        num_rows = x.shape[0]
        h = grad_out * active  # [B, K] gradient at the BatchNorm output of the pooled points
        grad_gamma, grad_beta = (h * normalized).sum(0), h.sum(0)
        dxhat = h * gamma  # non-zero only at the pooled rows
        sparse = dxhat * inv_std  # [B, K] dz at the pooled rows (before the statistics' terms)
        flat = index.reshape(-1)
        rows = (sparse[:, :, None] * weight[None]).reshape(-1, x.shape[1])  # [B * K, C_in]
        grad_x = torch.zeros_like(x).index_add_(0, flat, rows)
        grad_w = (sparse[:, :, None] * x[flat].reshape(*index.shape, x.shape[1])).sum(0)
        if ctx.training:  # the gradients through the batch mean and variance
            mean_x, cov = stats
            a = dxhat.sum(0) * inv_std / num_rows  # [K]
            b = (dxhat * normalized).sum(0) * inv_std * inv_std / num_rows  # [K], times z - mu
            grad_x -= a @ weight
            grad_x -= (x - mean_x) @ (weight.T @ (b[:, None] * weight))
            grad_w -= a[:, None] * x.sum(0)[None, :]
            grad_w -= num_rows * b[:, None] * (weight @ cov)
        return grad_x, grad_w, grad_gamma, grad_beta, None, None, None, None, None, None


class MaxPooledPointLayer(nn.Module):
    """Shared ``Linear(no bias) -> BatchNorm -> ReLU`` on every point, then a max pool per cloud.

    ``fused=True`` (default) uses the fast path of the module docstring; ``fused=False`` the plain
    composition (:func:`max_pooled_point_layer_reference`). Both have the same parameters and buffers
    (``linear.weight``, ``norm.*``) and update BatchNorm's running statistics in the same way.
    """

    def __init__(self, in_channels: int, out_channels: int, fused: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)
        self.fused = fused

    def forward(self, x: torch.Tensor, layout: PointLayout) -> torch.Tensor:
        """``x [P, C_in]`` packed valid points of a batch with ``layout`` -> ``[B, C_out]``."""
        if not self.fused:
            return max_pooled_point_layer_reference(self, x, layout)
        norm = self.norm
        if self.training and x.shape[0] < 2:
            raise ValueError("Expected more than 1 point per channel when training (BatchNorm statistics)")
        momentum = 0.0
        if self.training:
            norm.num_batches_tracked.add_(1)
            momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
        return _MaxPooledPointLayerFunction.apply(
            x, self.linear.weight, norm.weight, norm.bias, norm.running_mean, norm.running_var, layout,
            self.training, momentum, norm.eps)


def max_pooled_point_layer_reference(layer: MaxPooledPointLayer, x: torch.Tensor, layout: PointLayout
                                     ) -> torch.Tensor:
    """The plain composition ``max over points of relu(norm(linear(x)))``: ``[P, C_in]`` -> ``[B, C_out]``.

    Padding becomes 0 after the ReLU, which never exceeds the max of a cloud's (non-negative) values.
    """
    return layout.unpack(torch.relu(layer.norm(layer.linear(x)))).max(dim=1).values


# ---------------------------------------------------------------------------------------------------
# PointNet
# ---------------------------------------------------------------------------------------------------
class TransformNet(nn.Module):
    """The T-Net: predicts a ``k x k`` matrix per cloud from its points, initialised to the identity.

    Per point MLP ``(w, 2w, 16w)`` (64, 128, 1024 at ``width=64``), max pool, fully connected
    ``(8w, 4w)`` with BatchNorm and ReLU, and a last ``Linear`` to ``k * k`` values whose weights and
    bias start at zero, added to the identity: at initialisation the transform is exactly ``I``.
    """

    def __init__(self, k: int, width: int = 64, fused: bool = True) -> None:
        super().__init__()
        self.k = k
        self.point_mlp = _mlp([k, width, 2 * width])
        self.pool = MaxPooledPointLayer(2 * width, 16 * width, fused)
        self.head = _mlp([16 * width, 8 * width, 4 * width])
        self.out = nn.Linear(4 * width, k * k)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, layout: PointLayout) -> torch.Tensor:
        """``x [P, k]`` packed points -> matrices ``[B, k, k]``."""
        pooled = self.pool(self.point_mlp(x), layout)
        eye = torch.eye(self.k, dtype=x.dtype, device=x.device)
        return self.out(self.head(pooled)).view(-1, self.k, self.k) + eye


class PointNetFeatures(NamedTuple):
    """What :class:`PointNetEncoder` returns.

    Attributes:
        global_feature: ``[B, 16 * width]`` (``[B, 1024]``) max-pooled feature of each cloud.
        point_features: ``[B, N, width]`` per-point features after the feature transform (zeros at
            padding), the local part of the segmentation input.
        input_transform: ``[B, 3, 3]`` matrices applied to xyz, or None without the input transform.
        feature_transform: ``[B, width, width]`` matrices applied to the point features, or None.
    """

    global_feature: torch.Tensor
    point_features: torch.Tensor
    input_transform: torch.Tensor | None
    feature_transform: torch.Tensor | None


class PointNetEncoder(nn.Module):
    """PointNet's shared trunk: points ``[B, N, C]`` -> :class:`PointNetFeatures`.

    Args:
        in_channels: ``C``, 3 for xyz or more (xyz first, then e.g. normals).
        width: ``w`` (64 in the paper): per-point MLPs ``(w, w)`` and ``(w, 2w, 16w)``.
        input_transform: predict and apply a 3x3 transform to xyz (the paper: yes).
        feature_transform: predict and apply a ``w x w`` transform to the point features (the paper: yes).
        fused: use :class:`MaxPooledPointLayer`'s fast path (False: the plain reference).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, input_transform: bool = True,
                 feature_transform: bool = True, fused: bool = True) -> None:
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"PointNetEncoder: in_channels must be >= 3 (xyz first), got {in_channels}")
        self.in_channels, self.width = in_channels, width
        self.input_tnet = TransformNet(3, width, fused) if input_transform else None
        self.local_mlp = _mlp([in_channels, width, width])
        self.feature_tnet = TransformNet(width, width, fused) if feature_transform else None
        self.global_mlp = _mlp([width, width, 2 * width])
        self.pool = MaxPooledPointLayer(2 * width, 16 * width, fused)

    @property
    def global_channels(self) -> int:
        """Size of the global feature (1024 at ``width=64``)."""
        return 16 * self.width

    def encode(self, points: torch.Tensor, lengths: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, PointLayout]:
        """Like :meth:`forward`, with the point features packed ``[P, w]`` and the batch layout."""
        layout = point_layout(points, lengths, self.in_channels)
        x = layout.pack(points)
        input_matrix = feature_matrix = None
        if self.input_tnet is not None:
            input_matrix = self.input_tnet(x[:, :3], layout)
            xyz = layout.transform(x[:, :3].contiguous(), input_matrix)
            x = torch.cat([xyz, x[:, 3:]], dim=1) if self.in_channels > 3 else xyz
        local = self.local_mlp(x)
        if self.feature_tnet is not None:
            feature_matrix = self.feature_tnet(local, layout)
            local = layout.transform(local, feature_matrix)
        pooled = self.pool(self.global_mlp(local), layout)
        return pooled, local, input_matrix, feature_matrix, layout

    def forward(self, points: torch.Tensor, lengths: torch.Tensor | None = None) -> PointNetFeatures:
        """Args: ``points [B, N, C]``, optional ``lengths [B]`` (valid points per cloud, >= 1).

        Raises:
            PointCloudError: wrong shape or channel count, bad lengths, NaN or inf in valid points.
        """
        pooled, local, input_matrix, feature_matrix, layout = self.encode(points, lengths)
        return PointNetFeatures(pooled, layout.unpack(local), input_matrix, feature_matrix)


class PointNetClassifier(nn.Module):
    """PointNet classification network: points ``[B, N, C]`` -> logits ``[B, num_classes]``.

    Args:
        num_classes: number of classes.
        in_channels, width, input_transform, feature_transform, fused: see :class:`PointNetEncoder`.
        dropout: dropout probability before the last layer (the paper: 0.3, i.e. keep ratio 0.7).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64, input_transform: bool = True,
                 feature_transform: bool = True, dropout: float = 0.3, fused: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"PointNetClassifier: num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"PointNetClassifier: dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.encoder = PointNetEncoder(in_channels, width, input_transform, feature_transform, fused)
        self.head = nn.Sequential(_mlp([16 * width, 8 * width, 4 * width]), nn.Dropout(dropout),
                                  nn.Linear(4 * width, num_classes))

    def forward_with_features(self, points: torch.Tensor, lengths: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, PointNetFeatures]:
        """``(logits [B, num_classes], features)``: the features hold the transforms for the regulariser."""
        features = self.encoder(points, lengths)
        return self.head(features.global_feature), features

    def forward(self, points: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``points [B, N, C]`` (optional ``lengths [B]``) -> logits ``[B, num_classes]``."""
        return self.forward_with_features(points, lengths)[0]


class PointNetSegmenter(nn.Module):
    """PointNet segmentation network: points ``[B, N, C]`` -> per-point logits ``[B, N, num_classes]``.

    Each point's ``w``-d feature (after the feature transform) is concatenated with its cloud's
    global feature (``17w`` = 1088 channels) and goes through the per-point MLP ``(8w, 4w, 2w, 2w)``
    (512, 256, 128, 128) and a last ``Linear`` to the class logits. Logits at padding are 0.

    Args: as :class:`PointNetClassifier` (no dropout).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64, input_transform: bool = True,
                 feature_transform: bool = True, fused: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"PointNetSegmenter: num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.encoder = PointNetEncoder(in_channels, width, input_transform, feature_transform, fused)
        self.head = nn.Sequential(_mlp([17 * width, 8 * width, 4 * width, 2 * width, 2 * width]),
                                  nn.Linear(2 * width, num_classes))

    def forward_with_features(self, points: torch.Tensor, lengths: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, PointNetFeatures]:
        """``(logits [B, N, num_classes], features)``."""
        pooled, local, input_matrix, feature_matrix, layout = self.encoder.encode(points, lengths)
        batch_of_row = torch.arange(layout.batch, device=points.device)
        batch_of_row = (batch_of_row.repeat_interleave(layout.num_points) if layout.lengths is None
                        else batch_of_row.repeat_interleave(layout.lengths))
        logits = self.head(torch.cat([local, pooled[batch_of_row]], dim=1))
        features = PointNetFeatures(pooled, layout.unpack(local), input_matrix, feature_matrix)
        return layout.unpack(logits), features

    def forward(self, points: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``points [B, N, C]`` (optional ``lengths [B]``) -> per-point logits ``[B, N, num_classes]``."""
        return self.forward_with_features(points, lengths)[0]


def orthogonality_regularizer(transform: torch.Tensor) -> torch.Tensor:
    """PointNet's regulariser of a predicted transform: ``mean_b ||I - A_b A_b^T||_F^2``.

    The squared Frobenius norm (the sum of the squared entries of ``I - A A^T``) of each matrix,
    averaged over the batch: 0 exactly when every ``A_b`` is orthogonal (e.g. a rotation). The paper
    adds it, times a weight (0.001), to the classification loss for the 64x64 feature transform.

    Args:
        transform: ``[B, k, k]`` matrices.

    Returns:
        a scalar tensor.
    """
    square = isinstance(transform, torch.Tensor) and transform.ndim == 3
    if not square or transform.shape[1] != transform.shape[2]:
        shape = tuple(transform.shape) if isinstance(transform, torch.Tensor) else type(transform).__name__
        raise ValueError(f"orthogonality_regularizer: expected square matrices [B, k, k], got {shape}")
    if transform.shape[0] == 0:
        raise ValueError("orthogonality_regularizer: empty batch")
    eye = torch.eye(transform.shape[1], dtype=transform.dtype, device=transform.device)
    difference = eye - transform @ transform.transpose(1, 2)
    return difference.square().sum(dim=(1, 2)).mean()
