"""The raster layer: reading (bands, nodata, alignment), Cloud Optimized GeoTIFF writing and vectorising.

Every part of changekit that touches georeferenced pixels goes through this package, so each of these is done
once: :class:`~changekit.raster.reader.RasterReader` (windowed reads of selected bands, validity masks, warping
onto another grid), :mod:`~changekit.raster.writer` (strip-wise writers that finish as COGs) and
:mod:`~changekit.raster.vector` (change polygons with areas and probabilities).
"""

from .reader import RESAMPLINGS, RasterReader, check_pair, grid_difference, same_grid

__all__ = ["RESAMPLINGS", "RasterReader", "check_pair", "grid_difference", "same_grid"]
