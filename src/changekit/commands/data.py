"""Data tools: ``changekit data check|tile|merge|lists|synth``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import Out, Overwrite


def register(app: typer.Typer, data_app: typer.Typer) -> None:  # noqa: ARG001 - the plugin signature
    """Add the data tools to ``changekit data``."""

    @data_app.command("check")
    def data_check(
        source: Annotated[Path, typer.Argument(help="pair folder or path-list file")],
        root: Annotated[Optional[Path], typer.Option(help="root for relative list paths")] = None,
        layout: str = "auto",
    ) -> None:
        """Summarise a data set (pairs, sizes, change ratio) and list every problem found."""
        from ..data.check import check_dataset, format_summary

        summary = check_dataset(source, root=root, layout=layout)
        typer.echo(format_summary(summary))
        if summary.get("problems"):
            raise typer.Exit(code=1)


    @data_app.command("tile")
    def data_tile(
        src: Annotated[Path, typer.Argument(help="pair folder (A/B/label, im1/im2/label1/label2, ...)")],
        out: Out, size: int = 512, stride: Annotated[Optional[int], typer.Option()] = None,
        layout: str = "auto", overwrite: Overwrite = False,
        bands: Annotated[Optional[str], typer.Option(help="1-based bands to keep from both dates' images, e.g. 4,3,2 "
                                                          "(labels are tiled whole)")] = None,
    ) -> None:
        """Cut every image of a pair folder into size x size tiles (ClearSCD's edge rule)."""
        from ..data.norm_config import parse_bands
        from ..data.tiling import tile_folder

        tile_folder(src, out, size=size, stride=stride or size, layout=layout, overwrite=overwrite,
                    bands=parse_bands(bands, "--bands"))
        typer.echo(f"tiled into {out} (positions in {out / 'tiles.json'})")


    @data_app.command("merge")
    def data_merge(
        tiles: Annotated[Path, typer.Argument(help="folder of tile predictions")],
        out: Out,
        tiles_json: Annotated[Optional[Path], typer.Option(help="tiles.json written by `data tile`")] = None,
        mode: Annotated[str, typer.Option(help="mean (average overlaps) or vote (majority class)")] = "mean",
        rule: Annotated[str, typer.Option(help="0/255 masks: majority, or changeclip (the seed's merge)")] = "majority",
        overwrite: Overwrite = False,
    ) -> None:
        """Stitch tile predictions back into full images, averaging overlaps."""
        from ..data.tiling import merge_tiles

        files = merge_tiles(tiles, out, tiles_json=tiles_json, mode=mode, rule=rule, overwrite=overwrite)
        typer.echo(f"merged {len(files)} image(s) into {out}")


    @data_app.command("lists")
    def data_lists(
        root: Annotated[Path, typer.Argument(help="pair folder")],
        out: Annotated[Path, typer.Option("--out", "-o", help="list file")],
        fmt: Annotated[str, typer.Option("--format", help="paths or stems")] = "paths",
        absolute: bool = False, layout: str = "auto", overwrite: Overwrite = False,
    ) -> None:
        """Write a path list (A B label per line) or a stem list (it may lie inside the data folder)."""
        from ..data.lists import write_lists

        write_lists(root, out, layout=layout, fmt=fmt, absolute=absolute, overwrite=overwrite)
        typer.echo(f"wrote {out}")


    @data_app.command("synth")
    def data_synth(
        out: Out, n: int = 100, size: int = 256, seed: int = 0,
        semantic: Annotated[bool, typer.Option("--semantic", help="also write both dates' class maps")] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing set in --out (its pairs are "
                                                                    "deleted)")] = False,
    ) -> None:
        """Generate procedural bi-temporal scenes with exact change labels."""
        from ..data.synthetic import synthesize

        synthesize(out, n=n, size=size, seed=seed, semantic=semantic, overwrite=overwrite)
        typer.echo(f"wrote {n} pairs to {out}")
