"""Raster-layer commands: ``changekit vectorize MASK --out FILE`` (change polygons of a finished change mask)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import Overwrite


def register(app: typer.Typer, data_app: typer.Typer) -> None:  # noqa: ARG001 - the plugin signature
    """Add ``vectorize``."""

    @app.command("vectorize")
    def vectorize_cmd(
        mask: Annotated[Path, typer.Argument(help="change mask (0 = no change, non-zero = change; nodata skipped)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="polygons: .gpkg, .geojson or .parquet")],
        prob: Annotated[Optional[Path], typer.Option(help="probability raster on the mask's grid "
                                                          "(adds prob_mean / prob_max)")] = None,
        sem_a: Annotated[Optional[Path], typer.Option(help="date-A class map (with --sem-b: from-to classes)")
                         ] = None,
        sem_b: Annotated[Optional[Path], typer.Option(help="date-B class map")] = None,
        min_area: Annotated[float, typer.Option(help="drop polygons smaller than this (map units squared, "
                                                     "e.g. m2)")] = 0.0,
        simplify: Annotated[float, typer.Option(help="simplification tolerance in map units (0: pixel edges)")
                            ] = 0.0,
        overwrite: Overwrite = False,
    ) -> None:
        """Write the change polygons of a mask with pixels, area_m2, area_ha (and probabilities, classes)."""
        from ..errors import ConfigError
        from ..raster.vector import vectorize
        from ..safety import check_output

        if (sem_a is None) != (sem_b is None):
            raise ConfigError("--sem-a / --sem-b: give the class maps of both dates, or neither")
        inputs = [p for p in (mask, prob, sem_a, sem_b) if p is not None]
        check_output(out, inputs=inputs, overwrite=overwrite, kind="file")
        sem = [sem_a, sem_b] if sem_a is not None else None
        vectorize(mask, out, prob=prob, sem=sem, min_area=min_area, simplify=simplify)
        typer.echo(f"wrote {out}")
