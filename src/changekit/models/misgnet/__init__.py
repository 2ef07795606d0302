"""MISGNet (Liu et al., "MISGNet: Multilevel Intertemporal Semantic Guidance Network for Remote Sensing Images
Change Detection", IEEE JSTARS vol. 18, pp. 1827-1840, 2025; code: github.com/JackLiu-97/MISGNet).

Package layout: :mod:`.sgm` (Semantics Guidance Module), :mod:`.decoder` (MDAM and head), :mod:`.model`
(the model and the registered ``misgnet`` builder), :mod:`.convert` (import of the authors' pickled
checkpoints). Importing the package registers ``misgnet``.
"""

from __future__ import annotations

from .model import MISGNet, misgnet
from .sgm import CascadeGCNet, GraphNet, MutualModule, MutualNet

__all__ = ["CascadeGCNet", "GraphNet", "MISGNet", "MutualModule", "MutualNet", "misgnet"]
