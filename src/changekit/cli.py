"""The ``changekit`` command line: each command is a few lines over the Python API.

User errors (:class:`~changekit.errors.ChangekitError`) print one line ``error: ...`` and exit with code 2;
``--debug`` (anywhere on the line) shows the traceback instead. Usage errors (unknown command or option, a
missing or mistyped value, extra arguments) print the usage line and one ``error:`` line and exit with code 2;
a bare ``changekit`` (or command group) prints its help, then ``error: missing command``, and exits with 2 too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_usage import (
    click_exceptions,
    context_for,
    expand_set_pairs,
    one_line,
    show_missing_command,
    show_usage_error,
)
from .commands import Out, Overwrite
from .errors import ChangekitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Deep-learning change detection for remote-sensing image pairs.")
data_app = typer.Typer(no_args_is_help=True, help="Data tools: check, tile, merge, lists, synth.")
app.add_typer(data_app, name="data")

# ChangeCLIP's tags per tile (the seed's mm_slide), shared by predict and test
TileTags = Annotated[bool, typer.Option("--tile-tags", help="ChangeCLIP: tag every tile with CLIP instead of "
                                                            "reading the tag files (the seed's mm_slide)")]
ClipModel = Annotated[str, typer.Option(help="--tile-tags: open_clip model name")]
ClipWeights = Annotated[Optional[Path], typer.Option(help="--tile-tags: local CLIP weights file")]
ClipClasses = Annotated[Optional[Path], typer.Option(help="--tile-tags: class-name file (default: the 56)")]
Threshold = Annotated[Optional[float], typer.Option(help="change probability above which a pixel is change, 0..1 "
                                                         "[default: the checkpoint's trainer.threshold]")]
Bands = Annotated[Optional[str], typer.Option(help="1-based bands of the inputs to read, in the model's order, e.g. "
                                                   "4,3,2 [default: the checkpoint's data.bands]")]
Align = Annotated[bool, typer.Option("--align", help="warp B onto A's grid as it is read (CRS, resolution, extent; "
                                                     "outside B is nodata)")]
Resampling = Annotated[Optional[str], typer.Option(help="--align resampling: nearest, bilinear (default), cubic, "
                                                        "lanczos, average, mode, ...")]


@app.command()
def train(
    config: Annotated[Optional[list[Path]], typer.Argument(
        help="YAML config(s), composed left to right; optional with --resume (the run's config.yaml)")] = None,
    out: Out = Path("runs/run"),
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="overrides key=value, several after one --set "
                                                                    "(--set trainer.max_epochs=2 data.batch_size=4)")
                    ] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its newest readable checkpoint, "
                                              "with its own config.yaml (--set changes only what it names)")] = False,
) -> None:
    """Train a model from a config; checkpoints, logs and model.ckpt go to --out."""
    from .engine.train import train as _train

    result = _train(list(config) if config else None, out, overrides=set_ or [], resume=resume)
    typer.echo(f"checkpoint: {result.get('checkpoint')}  best {result['monitor']}: {result['best_score']}")


@app.command()
def test(
    ckpt: Annotated[Path, typer.Option(help="checkpoint (model.ckpt, best.ckpt or last.ckpt)")],
    out: Out,
    data: Annotated[Optional[Path], typer.Option(help="labelled folder or list file (default: config's test)")] = None,
    batch_size: Annotated[Optional[int], typer.Option()] = None,
    no_report: Annotated[bool, typer.Option("--no-report")] = False,
    threshold: Threshold = None, overwrite: Overwrite = False,
    tile_tags: TileTags = False, clip_model: ClipModel = "ViT-B-16", clip_weights: ClipWeights = None,
    clip_classes: ClipClasses = None, bands: Bands = None,
    align: Align = False, resampling: Resampling = None,
) -> None:
    """Evaluate a checkpoint: OUT/metrics.json and OUT/report.html."""
    from .engine.evaluate import format_test_summary
    from .engine.evaluate import test as _test

    res = _test(ckpt, out, data=data, batch_size=batch_size, report=not no_report, tile_tags=tile_tags,
                clip_model=clip_model, clip_weights=clip_weights, clip_classes=clip_classes, threshold=threshold,
                overwrite=overwrite, bands=bands, align=align, resampling=resampling)
    typer.echo(format_test_summary(res))
    typer.echo(f"metrics: {out / 'metrics.json'}")


@app.command()
def predict(
    ckpt: Annotated[Path, typer.Option(help="checkpoint (an ONNX export with --runtime onnx)")],
    out: Out,
    a: Annotated[Optional[Path], typer.Option("--a", help="date-A image or folder")] = None,
    b: Annotated[Optional[Path], typer.Option("--b", help="date-B image or folder")] = None,
    pairs: Annotated[Optional[Path], typer.Option(help="CSV pair list (columns a,b[,out][,name], paths relative "
                                                       "to it) instead of --a/--b: pairs isolated, resumable")
                     ] = None,
    tile: Annotated[int, typer.Option(help="tile side in pixels")] = 512,
    overlap: Annotated[int, typer.Option(help="pixels shared by neighbouring tiles, blended away")] = 64,
    batch_size: Annotated[int, typer.Option(help="tiles per forward pass")] = 4,
    blend: Annotated[str, typer.Option(help="gaussian (seam-free) or mean (mmseg's averaging)")] = "gaussian",
    threshold: Threshold = None,
    prob: Annotated[bool, typer.Option("--prob", help="also write probability maps (into OUT_prob/)")] = False,
    overlay: Annotated[bool, typer.Option("--overlay", help="also write coloured overlays (into OUT_overlay/)")
                       ] = False,
    device: Annotated[Optional[str], typer.Option()] = None,
    amp: Annotated[bool, typer.Option("--amp", help="autocast: bfloat16 on CPU, float16 on CUDA (faster, "
                                                    "results differ in the last digits)")] = False,
    overwrite: Overwrite = False,
    tile_tags: TileTags = False, clip_model: ClipModel = "ViT-B-16", clip_weights: ClipWeights = None,
    clip_classes: ClipClasses = None,
    runtime: Annotated[str, typer.Option(help="torch, or onnx (onnxruntime; --ckpt is a changekit export)")
                       ] = "torch",
    summary: Annotated[bool, typer.Option("--summary", help="also write <name>_summary.json per pair (changed "
                                                            "area, polygons, valid share, model, timings)")] = False,
    report: Annotated[bool, typer.Option("--report", help="also write a self-contained <name>_report.html per "
                                                          "pair (implies --summary)")] = False,
    bands: Bands = None,
    align: Align = False, resampling: Resampling = None,
    compress: Annotated[str, typer.Option(help="COG compression: deflate, zstd or lzw")] = "deflate",
    vector: Annotated[Optional[Path], typer.Option(help="also write change polygons (.gpkg, .geojson, .parquet) "
                                                        "with areas and probabilities")] = None,
    min_area: Annotated[float, typer.Option(help="--vector: drop polygons smaller than this (map units^2)")] = 0.0,
    simplify: Annotated[float, typer.Option(help="--vector: simplification tolerance (map units)")] = 0.0,
) -> None:
    """Write 0/255 change masks (PNG, or GeoTIFF keeping the CRS) named by stem; --out FILE.png for one pair;
    --pairs LIST.csv for many scenes (isolated, resumable, distributed under torchrun)."""
    from .engine.outputs import FILE_SUFFIXES, PredictionLayout
    from .engine.predict import predict as _predict

    from .engine.options import PredictOptions

    options = PredictOptions(tile=tile, overlap=overlap, batch_size=batch_size, blend=blend, threshold=threshold,
                             save_prob=prob, save_overlay=overlay, device=device, amp=amp, tile_tags=tile_tags,
                             clip_model=clip_model, clip_weights=clip_weights, clip_classes=clip_classes,
                             overwrite=overwrite, runtime=runtime, summary=summary, report=report, bands=bands,
                             align=align, resampling=resampling or "bilinear", compress=compress, vector=vector,
                             min_area=min_area, simplify=simplify)
    if (pairs is None) == (a is None and b is None) or (pairs is None and (a is None or b is None)):
        raise typer.BadParameter("give --a and --b, or --pairs", param_hint="--pairs")
    if pairs is not None or sys.stderr.isatty():  # batch runs: tiles/s, pairs done and an ETA on stderr
        from .engine.progress import show_progress

        show_progress()
    if pairs is not None:
        from .engine.pairs import format_table, predict_pairs

        run = predict_pairs(ckpt, pairs, out, options)
        if run.table is not None:
            typer.echo(format_table(run.results))
            typer.echo(f"table: {run.table}")
        raise typer.Exit(code=1 if run.failed else 0)
    files = _predict(ckpt, a, b, out, options)
    if not files:  # a rank other than 0 of a distributed run: rank 0 writes the outputs and says so
        return
    single = len(files) == 1 and out.suffix.lower() in FILE_SUFFIXES
    typer.echo(f"wrote {len(files)} mask(s) to {files[0] if single else files[0].parent}")
    extras = PredictionLayout.plan(out, len(files), False, prob, overlay).roots()
    for key in ("prob", "overlay"):
        if key in extras and extras[key].exists():
            typer.echo(f"{key}: {extras[key]}")


@app.command()
def export(
    ckpt: Annotated[Path, typer.Option(help="checkpoint")],
    onnx: Annotated[Path, typer.Option("--onnx", help="the ONNX file to write (.onnx)")],
    tile: Annotated[int, typer.Option(help="tile size the graph is traced and checked at (predict's --tile)")] = 512,
    overwrite: Overwrite = False,
) -> None:
    """Export a checkpoint to ONNX (dynamic batch and size; normalisation and bands in its metadata), checked
    against PyTorch with onnxruntime; predict it with --runtime onnx."""
    from .export.onnx_export import export_onnx

    res = export_onnx(ckpt, onnx, tile=tile, overwrite=overwrite)
    sizes = "any tile size" if res.dynamic_size else f"{res.tile}-pixel tiles only"
    typer.echo(f"wrote {res.path} ({sizes}; max probability difference to PyTorch {res.max_diff:.1e})")


@app.command("eval-masks")
def eval_masks(
    pred: Annotated[Path, typer.Option(help="folder of predicted masks")],
    gt: Annotated[Path, typer.Option(help="folder of labels")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="metrics JSON")] = None,
    task: Annotated[str, typer.Option(help="binary or semantic")] = "binary",
    num_classes: Annotated[Optional[int], typer.Option(help="semantic: number of classes")] = None,
    ignore_index: Annotated[int, typer.Option(help="semantic: ignore value of the class maps")] = 255,
    overwrite: Overwrite = False,
) -> None:
    """Evaluate saved masks of any method against labels (matching stems)."""
    from .evaluation import eval_masks as _eval

    res = _eval(pred, gt, out=out, task=task, num_classes=num_classes, ignore_index=ignore_index,
                overwrite=overwrite)
    typer.echo(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=2, default=str))


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="JSON list of {name, task, params}")] = False,
    filter_: Annotated[str, typer.Option("--filter")] = "",
) -> None:
    """List the registered models with their task and parameter count."""
    from .models import list_models, model_info
    from .models.registry import get_builder

    names = [n for n in list_models(filter_) if not n.startswith("_")]
    # a composite (the ensemble) has its members' task and parameters, not defaults of its own
    made_by = {n: getattr(get_builder(n), "made_by", None) for n in names}
    infos = [{"name": n, "task": None, "params": None, "made_by": made_by[n]} if made_by[n] else model_info(n)
             for n in names]
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    for i in infos:
        if i["params"] is None:
            typer.echo(f"{i['name']:<24} {'members':<9} {'members':>13}  (made by `{i['made_by']}`)")
        else:
            typer.echo(f"{i['name']:<24} {i['task']:<9} {i['params']:>13,d}")


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="registered model name")],
    size: int = 256, batch: int = 8, device: str = "cpu", iters: int = 5, warmup: int = 2,
    channels_last: Annotated[bool, typer.Option("--channels-last")] = False,
    amp: Annotated[bool, typer.Option("--amp", help="bf16 autocast")] = False,
    no_train: Annotated[bool, typer.Option("--no-train", help="skip the training step")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Inference pairs/s, one training step's time and peak memory on random input."""
    from .bench import benchmark, format_bench

    res = benchmark(model, size=size, batch=batch, device=device, iters=iters, warmup=warmup,
                    channels_last=channels_last, amp=amp, train_step=not no_train)
    typer.echo(json.dumps(res, indent=2, default=str) if as_json else format_bench(res))


@app.command()
def demo(
    out: Out = Path("demo_out"),
    minutes: Annotated[float, typer.Option(help="training time budget")] = 3.0,
    seed: int = 0,
) -> None:
    """Generate data, train fc_siam_diff briefly, evaluate, predict a large scene, print F1."""
    from .demo import run_demo

    res = run_demo(out, minutes=minutes, seed=seed)
    typer.echo(f"test F1 (change class): {res['f1']:.4f}  IoU: {res['iou']:.4f}  kappa: {res['kappa']:.4f}")
    if res["f1"] < 0.80:
        typer.echo("note: below the 0.80 the demo reaches on an idle 2-core machine in 3 minutes; a busy or slower "
                   "machine fits fewer training steps in the budget (try --minutes 5)")
    typer.echo(f"report: {res['report']}")
    typer.echo(f"large-scene prediction: {res['scene_mask']}")


def _register_plugins() -> None:
    """Add the commands of every module in :mod:`changekit.commands`."""
    import importlib
    import pkgutil

    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(app, data_app)


_register_plugins()


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"changekit {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="on an error, show the traceback instead of one line "
                                                        "(accepted anywhere on the line)")] = False,
) -> None:
    """Global options. ``--debug`` is taken out of the arguments by :func:`main`, so it works after the command too."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``changekit`` console script; returns the exit code.

    0: success; 1: a check found problems (``data check``) or the command was aborted; 2: a usage error
    (including a bare ``changekit``) or a user error (:class:`~changekit.errors.ChangekitError`), printed as
    one ``error:`` line; 130: interrupted. ``--debug`` anywhere on the line shows tracebacks instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:cut]
    args = [a for a in args[:cut] if a != "--debug"] + args[cut:]
    args = expand_set_pairs(args)
    usage_errors, click_errors = click_exceptions()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    if args and args[0] in ("predict", "test"):  # inference: reuse freed tensor memory (changekit.runtime)
        from .runtime import tune_cpu_allocator

        tune_cpu_allocator()
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # Lightning prints its own INFO lines; don't echo them twice
        handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        if args and args[0] in ("train", "test", "demo"):
            import lightning.pytorch  # noqa: F401  (it sets its logger to INFO on import: quieten it after)

            logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available: False" chatter
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    if not any(a.startswith("-") for a in args) and len(args) <= 3:  # a bare group: help and exit 2
        ctx, bare = context_for(app, args)
        if bare:
            return show_missing_command(ctx)
    try:
        rc = app(args=args, prog_name="changekit", standalone_mode=False)
    except usage_errors as exc:
        return show_usage_error(exc, app, args)
    except click_errors as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", 1))
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except ChangekitError as exc:
        if debug:
            raise
        typer.echo(f"error: {one_line(exc)}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
