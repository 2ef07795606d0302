"""Feature extractors shared by several model families (no models are registered here)."""

from __future__ import annotations

from .resnet_v1c import ResNetV1c, load_backbone_weights, siamese

__all__ = ["ResNetV1c", "load_backbone_weights", "siamese"]
