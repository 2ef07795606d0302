"""Radiometry commands: ``changekit data stats`` and ``changekit data convert oscd``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import Overwrite, sub_app


def register(app: typer.Typer, data_app: typer.Typer) -> None:  # noqa: ARG001 - the plugin signature
    """Add ``data stats`` and ``data convert oscd``."""

    @data_app.command("stats")
    def stats(
        source: Annotated[Path, typer.Argument(help="pair folder or path-list file (both dates are pooled)")],
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="JSON file for data.stats")] = None,
        bands: Annotated[Optional[str], typer.Option(help="1-based bands to read, e.g. 4,3,2 (default: all)")
                         ] = None,
        root: Annotated[Optional[Path], typer.Option(help="root for relative list paths")] = None,
        layout: str = "auto",
        dates: Annotated[str, typer.Option(help="a, b or a,b")] = "a,b",
        max_images: Annotated[Optional[int], typer.Option(help="read an evenly spaced subset of this many images")
                              ] = None,
        overwrite: Overwrite = False,
    ) -> None:
        """Per-band mean, std and percentiles of a data set's images (nodata excluded)."""
        from ..data.dataset_stats import dataset_stats, format_stats, write_stats
        from ..data.norm_config import parse_bands

        result = dataset_stats(source, root=root, layout=layout, bands=parse_bands(bands, "--bands"),
                               dates=[d.strip() for d in dates.split(",") if d.strip()], max_images=max_images)
        if out is not None:
            write_stats(result, out, overwrite=overwrite)
        typer.echo(format_stats(result))
        if out is not None:
            typer.echo(f"wrote {out} (use it with data.stats: {out})")

    convert = sub_app(data_app, "convert", "Convert published data set formats.")

    @convert.command("oscd")
    def oscd(
        src: Annotated[Path, typer.Argument(help="folder of OSCD cities (<city>/imgs_1, imgs_2, cm)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="output folder (A/, B/, label/, oscd.json)")],
        bands: Annotated[str, typer.Option(help="all, rgb, or Sentinel-2 band names (B04,B03,B02)")] = "all",
        resampling: Annotated[str, typer.Option(help="20 m / 60 m bands onto the 10 m grid: nearest, bilinear, "
                                                     "cubic or average")] = "bilinear",
        cities: Annotated[Optional[str], typer.Option(help="comma-separated city names (default: all)")] = None,
        overwrite: Overwrite = False,
    ) -> None:
        """OSCD's per-band Sentinel-2 files -> one multi-band GeoTIFF per date on the 10 m grid, 0/255 labels."""
        from ..data.oscd import convert_oscd

        names = [c.strip() for c in cities.split(",") if c.strip()] if cities else None
        records = convert_oscd(src, out, bands=bands, resampling=resampling, cities=names, overwrite=overwrite)
        typer.echo(f"wrote {len(records)} cities to {out} ({', '.join(r['city'] for r in records)})")
