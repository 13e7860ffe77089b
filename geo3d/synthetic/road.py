"""Road centre lines: 2D paths made of straight and circular segments, and random routes.

A :class:`RoadPath` is a dense polyline on the ground (world x, y in metres) parametrised by arc
length ``s``. A point at lateral offset ``d`` (metres, + = left of the direction of travel) has
world position ``xy(s) + d * n(s)`` with ``n = (-sin h, cos h)`` the left normal of the heading ``h``.
Beyond its ends a path continues straight along its end headings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LAYOUTS = ("random", "straight", "curve", "junction")
"""Route layouts: ``straight``, ``curve`` and ``junction`` put that feature just ahead of the ego's
start; ``random`` draws it. Later segments are drawn at random in every layout."""


@dataclass(frozen=True)
class Segment:
    """A piece of route: ``kind`` is ``"straight"``, ``"curve"`` or ``"junction"`` (a straight piece
    with a crossing road at its middle); ``curvature`` is 1 / radius in 1/m (+ = turning left)."""

    kind: str
    length_m: float
    curvature: float = 0.0

    def to_dict(self) -> dict:
        return {"kind": self.kind, "length_m": self.length_m, "curvature": self.curvature}


class RoadPath:
    """A polyline sampled every ``step_m`` or finer, with arc length and heading per sample.

    Attributes:
        xy: ``[N, 2]`` float64 world positions, metres.
        heading: ``[N]`` float64 direction of travel, radians from +x towards +y.
        s: ``[N]`` float64 arc length from the start, metres (increasing).
    """

    def __init__(self, xy: np.ndarray, heading: np.ndarray, s: np.ndarray) -> None:
        self.xy = np.asarray(xy, dtype=np.float64)
        self.heading = np.asarray(heading, dtype=np.float64)
        self.s = np.asarray(s, dtype=np.float64)
        if len(self.s) < 2 or np.any(np.diff(self.s) <= 0):
            raise ValueError("a path needs >= 2 samples with increasing arc length")

    @classmethod
    def from_segments(cls, segments: list[Segment], start_xy=(0.0, 0.0), start_heading: float = 0.0,
                      step_m: float = 1.0) -> RoadPath:
        """Chain ``segments`` from ``start_xy`` heading ``start_heading``; exact arcs, sampled every
        ``step_m`` (each segment's end is a sample)."""
        xy, heading, s = [np.asarray(start_xy, dtype=np.float64)], [float(start_heading)], [0.0]
        for seg in segments:
            count = max(1, math.ceil(seg.length_m / step_m))
            u = seg.length_m * np.arange(1, count + 1) / count
            h0, (x0, y0) = heading[-1], xy[-1]
            if abs(seg.curvature) < 1e-12:
                pts = np.stack([x0 + u * math.cos(h0), y0 + u * math.sin(h0)], axis=1)
                hs = np.full(count, h0)
            else:
                k = seg.curvature
                hs = h0 + k * u
                pts = np.stack([x0 + (np.sin(hs) - math.sin(h0)) / k, y0 - (np.cos(hs) - math.cos(h0)) / k], axis=1)
            xy += list(pts)
            heading += list(hs)
            s += list(s[-1] + u)
        return cls(np.array(xy), np.array(heading), np.array(s))

    @property
    def length(self) -> float:
        """Total arc length, metres."""
        return float(self.s[-1])

    def pose(self, s, d=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World ``(x, y, heading)`` at arc lengths ``s`` and lateral offsets ``d`` (broadcast).

        Positions interpolate linearly between samples (exact on straight pieces; on arcs the chord
        error is below ``step^2 / (8 R)``); headings interpolate likewise.
        """
        s, d = np.broadcast_arrays(np.asarray(s, dtype=np.float64), np.asarray(d, dtype=np.float64))
        i = np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.s) - 2)
        w = (s - self.s[i]) / (self.s[i + 1] - self.s[i])
        before, after = s < self.s[0], s > self.s[-1]
        w = np.where(before | after, 0.0, w)
        i = np.where(after, len(self.s) - 1, i)
        j = np.minimum(i + 1, len(self.s) - 1)
        heading = (1 - w) * self.heading[i] + w * self.heading[j]
        xy = (1 - w)[..., None] * self.xy[i] + w[..., None] * self.xy[j]
        beyond = np.where(before, s - self.s[0], np.where(after, s - self.s[-1], 0.0))
        direction = np.stack([np.cos(heading), np.sin(heading)], axis=-1)
        normal = np.stack([-np.sin(heading), np.cos(heading)], axis=-1)
        xy = xy + beyond[..., None] * direction + d[..., None] * normal
        return xy[..., 0], xy[..., 1], heading

    def samples(self, s0: float, s1: float, step_m: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Centre-line ``(xy [K, 2], heading [K])`` from ``s0`` to ``s1`` (both included), at the
        path's own samples in between and no coarser than ``step_m``."""
        inner = self.s[(self.s > s0) & (self.s < s1)]
        grid = np.linspace(s0, s1, max(2, math.ceil((s1 - s0) / step_m) + 1))
        s = np.unique(np.concatenate([[s0, s1], inner, grid]))
        x, y, heading = self.pose(s)
        return np.stack([x, y], axis=1), heading


def make_route(rng: np.random.Generator, layout: str, min_length_m: float, lead_in_m: float
               ) -> list[Segment]:
    """Random segments totalling at least ``min_length_m``: a straight lead-in of ``lead_in_m``,
    then the layout's feature (see :data:`LAYOUTS`), then random straights, curves (radius 45-150 m,
    15-75 degrees) and junctions, with the total turn kept within +-100 degrees of the start."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    segments = [Segment("straight", lead_in_m)]
    first = layout if layout != "random" else str(rng.choice(["straight", "curve", "junction"], p=[0.3, 0.35, 0.35]))
    turned, kind = 0.0, first
    while sum(seg.length_m for seg in segments) < min_length_m:
        if kind == "straight":
            segments.append(Segment("straight", float(rng.uniform(40.0, 90.0))))
        elif kind == "junction":
            segments.append(Segment("junction", float(rng.uniform(50.0, 70.0))))
        else:
            radius, angle = rng.uniform(45.0, 150.0), math.radians(rng.uniform(15.0, 75.0))
            sign = 1.0 if rng.uniform() < 0.5 else -1.0
            if abs(turned + sign * angle) > math.radians(100.0):
                sign = -sign
            turned += sign * angle
            segments.append(Segment("curve", float(radius * angle), float(sign / radius)))
        kind = str(rng.choice(["straight", "curve", "junction"], p=[0.4, 0.35, 0.25]))
    return segments
