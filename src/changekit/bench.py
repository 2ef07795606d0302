"""Speed and memory benchmark of one model on random input, with the exact settings recorded.

Numbers are only comparable with the settings and the machine they were measured on, so the result carries
both: input size, batch, threads, precision, torch version, CPU or GPU name. Times are medians over ``iters``
timed runs after ``warmup`` untimed ones (``time.perf_counter``, CUDA synchronised).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory in use before the phase. On CPU the
peak resident set size above the RSS before the phase; on Linux the kernel's high-water mark (``VmHWM``) is
reset before each phase through ``/proc/self/clear_refs``, so the value is exact. Where that is impossible,
``ru_maxrss`` is used: it never goes down, so the increase is a lower bound (``memory_method`` says which).
tracemalloc cannot be used because torch's CPU allocations bypass Python's allocator.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .inference.sliding import autocast_for
from .runtime import tuned_cpu_allocator

log = logging.getLogger(__name__)


def device_name(device: str | torch.device) -> str:
    """Human-readable name of the GPU, or of the CPU model from ``/proc/cpuinfo``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type != "cpu":
        return dev.type
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


class _PeakMemory:
    """Peak memory of one phase in MiB (see the module docstring for the method per device)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = "cuda_max_memory_allocated" if device.type == "cuda" else "proc_vmhwm"
        self._base = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return
        if self.method == "proc_vmhwm":
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                self._base = _proc_status_kib("VmRSS")
                return
            except (OSError, ValueError):
                self.method = "ru_maxrss"
                log.info("cannot reset the peak RSS; memory figures are lower bounds (ru_maxrss)")
        self._base = _ru_maxrss_kib()

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        peak = _proc_status_kib("VmHWM") if self.method == "proc_vmhwm" else _ru_maxrss_kib()
        return max(peak - self._base, 0) / 1024


def _proc_status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def _ru_maxrss_kib() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB on Linux


def _time_runs(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> list[float]:
    """Seconds of each of ``iters`` calls of ``fn`` after ``warmup`` untimed calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _build(model_name_or_module: str | nn.Module, in_channels: int, model_kwargs: dict[str, Any] | None) -> nn.Module:
    if isinstance(model_name_or_module, nn.Module):
        return model_name_or_module
    from .models.registry import accepted_args, build_model, get_builder

    kwargs = dict(model_kwargs or {})
    allowed = accepted_args(get_builder(model_name_or_module))
    if allowed is None or "in_channels" in allowed:
        kwargs.setdefault("in_channels", in_channels)
    return build_model(model_name_or_module, **kwargs)


def count_gmacs(model: nn.Module, size: int = 256, in_channels: int = 3, extras: dict[str, Any] | None = None,
                device: str | torch.device = "cpu") -> float:
    """Multiply-adds (G) of one ``size`` x ``size`` pair in eval mode: ``FlopCounterMode``'s FLOPs halved.

    Halving gives the multiply-add count that fvcore, thop and open-cd print as "FLOPs", so our figures sit beside
    the published ones; convolutions, matrix products and attention are counted, element-wise operations not.
    """
    from torch.utils.flop_counter import FlopCounterMode

    dev = torch.device(device)
    example = getattr(model, "example_extras", None)
    kwargs = {**(example(1) if callable(example) else {}), **(extras or {})}
    a = torch.zeros(1, in_channels, size, size, device=dev)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:  # with autograd: its module hooks fail without it
            model(a, a.clone(), **kwargs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def _pair_gmacs(model: nn.Module, size: int, in_channels: int, extras: dict[str, Any], batch: int,
                dev: torch.device) -> float | None:
    """:func:`count_gmacs` of one pair: the model's own dummy extras of one pair, or the caller's when the batch is
    1; ``None`` when a model needs extra inputs that cannot be cut to one pair."""
    if callable(getattr(model, "example_extras", None)):
        return count_gmacs(model, size, in_channels, None, dev)
    if batch == 1 or not getattr(model, "extra_inputs", ()):
        return count_gmacs(model, size, in_channels, extras if batch == 1 else None, dev)
    return None


def _train_loss(out: Any, labels: torch.Tensor, sem_labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on the change logits (binary CE for one channel) plus CE on semantic logits if any."""
    change = out.change.float()
    if change.shape[1] == 1:
        loss = F.binary_cross_entropy_with_logits(change[:, 0], labels.float())
    else:
        loss = F.cross_entropy(change, labels)
    for key in ("sem_a", "sem_b"):
        logits = getattr(out, key, None)
        if logits is not None:
            loss = loss + F.cross_entropy(logits.float(), sem_labels[key])
    return loss


def benchmark(
    model_name_or_module: str | nn.Module,
    size: int = 256,
    batch: int = 8,
    in_channels: int = 3,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    iters: int = 5,
    train_step: bool = True,
    channels_last: bool = False,
    threads: int | None = None,
    amp: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure inference throughput, training-step time and peak memory of a model on random pairs.

    Args:
        model_name_or_module: a registry name (built with ``model_kwargs`` and ``in_channels``) or a model.
        size: square input side; must be a multiple of the model's ``input_divisor``.
        batch: pairs per forward pass.
        in_channels: bands per date.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        warmup, iters: untimed and timed repetitions; times are medians of the timed ones.
        train_step: also time forward + loss + backward + AdamW step (the model's weights are restored after).
        channels_last: use the channels-last memory format for model and inputs.
        threads: ``torch.set_num_threads`` for the run (restored afterwards); ``None`` keeps the current value.
        amp: autocast (float16 on CUDA, bfloat16 on CPU; no gradient scaling, timing only).
        model_kwargs: constructor arguments when a name is given.
        extras: forward keywords for models with ``extra_inputs`` (e.g. ``{"tags_a": [...], "tags_b": [...]}``).

    Returns:
        A dict with ``model``, ``task``, ``params``, ``infer_time_s`` (median per batch), ``infer_pairs_per_s``,
        ``infer_times_s``, ``infer_peak_mem_mib``, ``gmacs_per_pair`` (:func:`count_gmacs`; ``None`` for a model
        whose extra inputs cannot be made for one pair), ``train_step_s``, ``train_pairs_per_s``,
        ``train_peak_mem_mib`` (``None`` without ``train_step``), ``memory_method``, ``torch``, ``threads``,
        ``device_name``, ``python``, ``platform`` and ``settings`` (every argument as used).
    """
    for key, value, low in (("size", size, 1), ("batch", batch, 1), ("in_channels", in_channels, 1),
                            ("warmup", warmup, 0), ("iters", iters, 1)):
        if value < low:
            raise ConfigError(f"{key}: must be at least {low}, got {value}")
    dev = torch.device(device)
    old_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads: must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        model = _build(model_name_or_module, in_channels, model_kwargs)
        was_training = model.training
        try:
            return _run(model, size, batch, in_channels, dev, warmup, iters, train_step, channels_last, amp,
                        model_kwargs, extras or {})
        finally:
            model.train(was_training)
    finally:
        torch.set_num_threads(old_threads)


def _run(
    model: nn.Module, size: int, batch: int, in_channels: int, dev: torch.device, warmup: int, iters: int,
    train_step: bool, channels_last: bool, amp: bool, model_kwargs: dict[str, Any] | None, extras: dict[str, Any],
) -> dict[str, Any]:
    name = getattr(model, "model_name", "") or type(model).__name__
    divisor = int(getattr(model, "input_divisor", 1) or 1)
    if size % divisor:
        raise ConfigError(f"size: {size} is not a multiple of {name}'s input_divisor {divisor}; "
                          f"try {-(-size // divisor) * divisor}")
    model_in = getattr(model, "in_channels", None)
    if model_in is not None and model_in != in_channels:
        raise ConfigError(f"in_channels: {in_channels} given but {name} expects {model_in}")
    example = getattr(model, "example_extras", None)
    if callable(example):  # models with extra inputs (ChangeCLIP's tags) provide dummy ones for timing
        extras = {**example(batch), **extras}
    missing = [k for k in getattr(model, "extra_inputs", ()) if k not in extras]
    if missing:
        raise ConfigError(f"extras: {name} needs the forward inputs {', '.join(missing)}; pass them in extras")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(dev, memory_format=fmt)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(batch, in_channels, size, size, generator=gen).to(dev).contiguous(memory_format=fmt)
    b = torch.randn(batch, in_channels, size, size, generator=gen).to(dev).contiguous(memory_format=fmt)
    mem = _PeakMemory(dev)

    model.eval()

    def infer() -> Any:
        with torch.inference_mode(), autocast_for(dev, amp):
            return model(a, b, **extras)

    # inference as `changekit predict` runs it: with the CPU allocator tuned (changekit.runtime); training without
    with tuned_cpu_allocator() if dev.type == "cpu" else contextlib.nullcontext(False) as allocator_tuned:
        mem.start()
        infer_times = _time_runs(infer, dev, warmup, iters)
        infer_mem = mem.peak_mib()
        with torch.inference_mode():
            out = model(a, b, **extras)
    task = "semantic" if out.sem_a is not None else getattr(model, "task", "binary")
    infer_s = statistics.median(infer_times)
    result: dict[str, Any] = {
        "model": name,
        "task": task,
        "params": sum(p.numel() for p in model.parameters()),
        "gmacs_per_pair": _pair_gmacs(model, size, in_channels, extras, batch, dev),
        "infer_time_s": infer_s,
        "infer_pairs_per_s": batch / infer_s,
        "infer_times_s": infer_times,
        "infer_peak_mem_mib": infer_mem,
        "infer_cpu_allocator_tuned": allocator_tuned,
        "train_step_s": None,
        "train_pairs_per_s": None,
        "train_peak_mem_mib": None,
    }
    if train_step:
        labels = torch.randint(0, 2, (batch, size, size), generator=gen).to(dev)
        sem = {k: torch.randint(0, v.shape[1], (batch, size, size), generator=gen).to(dev)
               for k, v in (("sem_a", out.sem_a), ("sem_b", out.sem_b)) if v is not None}
        del out
        saved = copy.deepcopy(model.state_dict())
        try:
            times, train_mem = _time_training(model, a, b, labels, sem, extras, dev, warmup, iters, amp, mem)
        finally:
            model.load_state_dict(saved)
        step_s = statistics.median(times)
        result.update(train_step_s=step_s, train_pairs_per_s=batch / step_s, train_peak_mem_mib=train_mem)
    result.update(
        memory_method=mem.method,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        device_name=device_name(dev),
        python=platform.python_version(),
        platform=platform.platform(),
        settings=dict(size=size, batch=batch, in_channels=in_channels, device=str(dev), warmup=warmup,
                      iters=iters, train_step=train_step, channels_last=channels_last,
                      threads=torch.get_num_threads(), amp=amp,
                      amp_dtype=("float16" if dev.type == "cuda" else "bfloat16") if amp else None,
                      model_kwargs=dict(model_kwargs or {})),
    )
    return result


def _time_training(
    model: nn.Module, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, sem: dict[str, torch.Tensor],
    extras: dict[str, Any], dev: torch.device, warmup: int, iters: int, amp: bool, mem: _PeakMemory,
) -> tuple[list[float], float]:
    """Time forward + loss (+ the model's own extra losses) + backward + AdamW step."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None
    batch_dict = {"image_a": a, "image_b": b, "mask": labels, **sem, **extras}
    extra_losses = getattr(model, "extra_losses", None)

    def step() -> None:
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        with autocast_for(dev, amp):
            out = model(a, b, **extras)
        loss = _train_loss(out, labels, sem)
        if extra_losses is not None:
            for term in extra_losses(out, batch_dict).values():
                loss = loss + term.float()
        if loss.requires_grad:
            loss.backward()
        if opt is not None:
            opt.step()

    mem.start()
    times = _time_runs(step, dev, warmup, iters)
    return times, mem.peak_mib()


def format_bench(result: dict[str, Any]) -> str:
    """A readable multi-line table of a :func:`benchmark` result."""
    s = result["settings"]
    on_off = {True: "on", False: "off"}
    rows = [
        ("model", f"{result['model']} ({result['task']}, {result['params']:,} params)"),
        ("compute", f"{result['gmacs_per_pair']:.2f} GMACs per {s['size']}x{s['size']} pair (FLOPs / 2)"
                    if result.get("gmacs_per_pair") is not None else "not counted (extra inputs of one pair unknown)"),
        ("device", f"{s['device']}: {result['device_name']}"),
        ("software", f"torch {result['torch']}, python {result['python']}, {result['threads']} threads"),
        ("input", f"{s['batch']} x {s['in_channels']} x {s['size']} x {s['size']} per date"),
        ("settings", f"warmup {s['warmup']}, iters {s['iters']}, amp {on_off[bool(s['amp'])]}"
                     f"{' (' + s['amp_dtype'] + ')' if s['amp'] else ''}, channels_last {on_off[s['channels_last']]}"),
        ("inference", f"{result['infer_pairs_per_s']:.2f} pairs/s (median {result['infer_time_s'] * 1e3:.1f} ms "
                      "per batch)"),
        ("inference peak mem", f"{result['infer_peak_mem_mib']:.1f} MiB ({result['memory_method']})"),
    ]
    if result.get("train_step_s") is not None:
        rows += [
            ("training step", f"{result['train_step_s'] * 1e3:.1f} ms per batch "
                              f"({result['train_pairs_per_s']:.2f} pairs/s)"),
            ("training peak mem", f"{result['train_peak_mem_mib']:.1f} MiB ({result['memory_method']})"),
        ]
    if s.get("model_kwargs"):
        rows.append(("model kwargs", ", ".join(f"{k}={v!r}" for k, v in s["model_kwargs"].items())))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
