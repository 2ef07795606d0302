"""ChangeFormer (open-cd / ChangeAnywhere configuration): siamese MiT-b1, concatenated levels, SegFormer head.

``model`` holds the network and its registry builder, ``mit`` the MiT encoder (smp's modules in mmseg's layout)
and the weight renaming, ``convert`` the open-cd checkpoint import.
"""

from __future__ import annotations

from . import convert  # noqa: F401  # registers the open-cd converter
from .mit import MiTEncoder, load_mit_weights, mit_from_mmseg, mit_from_nvlabs
from .model import ChangeFormer, SegformerHead, changeformer

__all__ = ["ChangeFormer", "MiTEncoder", "SegformerHead", "changeformer", "load_mit_weights", "mit_from_mmseg",
           "mit_from_nvlabs"]
