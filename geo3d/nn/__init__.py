"""Neural-network building blocks shared by fields (SDF, NeRF): input encodings and MLPs (docs/neural_sdf.md)."""

from geo3d.nn.encodings import FrequencyEncoding, GridEncoding
from geo3d.nn.mlp import MLP

__all__ = ["FrequencyEncoding", "GridEncoding", "MLP"]
