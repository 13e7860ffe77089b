"""Signed distance functions (negative inside, world units): analytic shapes and CSG, mesh-to-SDF
through Open3D, DeepSDF-style sampling, neural SDFs and their fitting, chunked mesh extraction,
sphere tracing through the geo3d camera model, and mesh metrics (docs/sdf.md, docs/neural_sdf.md)."""

from geo3d.sdf.analytic import (
    SDF, Box, Capsule, Cylinder, Difference, Intersection, Plane, Rotated, RoundedBox, Scaled, Sphere, Torus,
    Translated, Union, box_sdf, capsule_sdf, cylinder_sdf, difference, intersection, plane_sdf, rounded_box_sdf,
    smooth_difference, smooth_intersection, smooth_union, sphere_sdf, torus_sdf, union,
)
from geo3d.sdf.extract import evaluate_grid, evaluate_grid_narrow_band, evaluate_slice, extract_mesh
from geo3d.sdf.mesh import (
    ClosestPoints, EdgeReport, MeshSDF, SDFSamples, SurfaceSamples, edge_report, sample_sdf_points,
    sample_surface_points,
)
from geo3d.sdf.metrics import MeshMetrics, mesh_metrics, point_metrics, relative_to_diagonal
from geo3d.sdf.neural import (
    FitResult, IGRFitConfig, NeuralSDF, NeuralSDFConfig, SDFFitConfig, fit_oriented_points, fit_sdf_samples,
)
from geo3d.sdf.sphere_tracing import SDFRender, SphereTraceResult, look_at, render_sdf, shade_normals, sphere_trace

__all__ = [
    "SDF", "Box", "Capsule", "Cylinder", "Difference", "Intersection", "Plane", "Rotated", "RoundedBox", "Scaled",
    "Sphere", "Torus", "Translated", "Union", "box_sdf", "capsule_sdf", "cylinder_sdf", "difference", "intersection",
    "plane_sdf", "rounded_box_sdf", "smooth_difference", "smooth_intersection", "smooth_union", "sphere_sdf",
    "torus_sdf", "union",
    "evaluate_grid", "evaluate_grid_narrow_band", "evaluate_slice", "extract_mesh",
    "ClosestPoints", "EdgeReport", "MeshSDF", "SDFSamples", "SurfaceSamples", "edge_report", "sample_sdf_points",
    "sample_surface_points",
    "MeshMetrics", "mesh_metrics", "point_metrics", "relative_to_diagonal",
    "FitResult", "IGRFitConfig", "NeuralSDF", "NeuralSDFConfig", "SDFFitConfig", "fit_oriented_points",
    "fit_sdf_samples",
    "SDFRender", "SphereTraceResult", "look_at", "render_sdf", "shade_normals", "sphere_trace",
]  # fmt: skip
