"""ChangeAnywhere commands: ``generator train``, ``generate``, ``data fewshot`` and ``data xbd-masks``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import Overwrite


def register(app: typer.Typer, data_app: typer.Typer) -> None:
    """Add the generator, generation and few-shot commands to the CLI."""
    gen_app = typer.Typer(no_args_is_help=True, help="Semantic latent diffusion generator (ChangeAnywhere).")
    app.add_typer(gen_app, name="generator")

    @gen_app.command("train")
    def generator_train(
        images: Annotated[Path, typer.Option(help="folder of single-date images")],
        masks: Annotated[Path, typer.Option(help="folder of their class maps (same stems)")],
        classes: Annotated[Path, typer.Option(help="classes.yaml: names, colors, ignore_index")],
        out: Annotated[Path, typer.Option("--out", "-o", help="run folder")],
        preset: Annotated[str, typer.Option(help="settings preset: default (GPU) or tiny (CPU smoke)")] = "default",
        config: Annotated[Optional[Path], typer.Option(help="YAML of settings over the preset")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override, e.g. train.ldm_steps=1000")] = None,
        resume: Annotated[bool, typer.Option(help="continue the run in --out")] = False,
        progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    ) -> None:
        """Train the autoencoder, then the mask-conditioned latent diffusion model; sample grids in OUT/samples."""
        from ..generation.model import load_class_table, resolve_settings
        from ..generation.train import train_generator

        settings = resolve_settings(preset, config, set_ or [])
        train_generator(images, masks, load_class_table(classes), out, settings, resume=resume, progress=progress)
        typer.echo(f"generator: {out}")

    @app.command("generate")
    def generate(
        generator: Annotated[Path, typer.Option(help="generator run folder")],
        masks: Annotated[Path, typer.Option(help="folder of single-date class maps")],
        out: Annotated[Path, typer.Option("--out", "-o", help="new data set folder")],
        n: Annotated[int, typer.Option(help="number of pairs")] = 100,
        seed: Annotated[int, typer.Option(help="base seed (pair i uses seed, i)")] = 0,
        images: Annotated[Optional[Path], typer.Option(help="real date-1 images (default: generated)")] = None,
        size: Annotated[Optional[int], typer.Option(help="crop side (default: the generator's)")] = None,
        strength: Annotated[float, typer.Option(help="appearance drift of unchanged regions, 0..1")] = 0.5,
        guidance: Annotated[Optional[float], typer.Option(help="classifier-free guidance scale")] = None,
        steps: Annotated[Optional[int], typer.Option(help="DDIM steps")] = None,
        area: Annotated[Optional[tuple[float, float]], typer.Option(
            help="changed-area fraction range [default: 0.05 0.3, or the --edits file's]")] = None,
        edits: Annotated[Optional[Path], typer.Option(help="YAML: area_fraction, ops, transitions, retries, ...")
                         ] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="write into an existing non-empty folder")
                             ] = False,
    ) -> None:
        """Write a change data set (A|B|label + label1|label2 + records/) from edited class maps.

        Pairs whose edits all failed are redrawn (``retries`` in --edits, default 3); any left without change
        are counted on a warning line and listed in generation.yaml. No change at all: error, nothing written.
        """
        from ..config import yaml_load
        from ..errors import ConfigError, DatasetNotFoundError
        from ..generation.edits import EditConfig
        from ..generation.writer import generate_dataset

        kwargs: dict = {}
        if edits is not None:
            if not edits.is_file():
                raise DatasetNotFoundError(f"{edits}: edit settings not found")
            extra = yaml_load(edits.read_text()) or {}
            unknown = set(extra) - set(EditConfig.__dataclass_fields__)
            if unknown:
                raise ConfigError(f"{edits}: unknown edit settings {sorted(unknown)}; known: "
                                  f"{sorted(EditConfig.__dataclass_fields__)}")
            kwargs.update(extra)
        if area is not None:
            kwargs["area_fraction"] = tuple(area)
        generate_dataset(generator, masks, out, n, seed=seed, images=images, size=size,
                         edits=EditConfig(**kwargs), strength=strength, guidance=guidance, steps=steps,
                         overwrite=overwrite)
        empty = int(yaml_load((out / "generation.yaml").read_text()).get("pairs_without_change", 0))
        if empty:
            typer.echo(f"warning: {empty} of {n} pairs have no change (their edits all failed); their stems are "
                       f"listed in {out / 'generation.yaml'}", err=True)
        typer.echo(f"wrote {n} pairs to {out} ({n - empty} with change)")

    @data_app.command("fewshot")
    def data_fewshot(
        source: Annotated[Path, typer.Argument(help="training folder or stem / path list")],
        more: Annotated[Optional[list[float]], typer.Argument(help="further percentages after --percent",
                                                              show_default=False)] = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="folder for the list files")] = Path("dataset_list"),
        percent: Annotated[Optional[list[float]], typer.Option(
            help="percentages: --percent 1 5 10 20 50 [default: 1 5 10 20 50]")] = None,
        prefix: Annotated[str, typer.Option(help="file prefix, e.g. sysucd-train")] = "train",
        root: Annotated[Optional[Path], typer.Option(help="root that a path list resolves against")] = None,
        overwrite: Overwrite = False,
    ) -> None:
        """Systematic few-shot stem lists: every (100/p)-th stem of the sorted training list."""
        from ..data.fewshot import write_fewshot_lists
        from ..errors import ConfigError

        if more and not percent:
            raise ConfigError(f"unexpected arguments {more}; percentages follow --percent")
        percents = [*(percent or [1, 5, 10, 20, 50]), *(more or [])]
        for path in write_fewshot_lists(source, out, percents, prefix=prefix, root=root, overwrite=overwrite):
            typer.echo(f"wrote {path} ({sum(1 for _ in path.open())} stems)")

    @data_app.command("xbd-masks")
    def data_xbd_masks(
        root: Annotated[Path, typer.Argument(help="xBD folder with json/ (and A/)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="folder for the class maps")],
        phase: Annotated[str, typer.Option(help="pre or post")] = "pre",
        overwrite: Overwrite = False,
    ) -> None:
        """Rasterise xBD building polygons to building / background class maps (+ classes.yaml)."""
        from ..data.xbd import write_building_maps

        typer.echo(f"wrote {len(write_building_maps(root, out, phase, overwrite=overwrite))} maps to {out}")
