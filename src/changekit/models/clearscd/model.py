"""The ClearSCD network: Siamese EfficientNet-b0 + FPN, shared segmentation head, deep CVAPS, SACL and BSCC."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torch.utils.checkpoint import checkpoint

from ...errors import ConfigError
from .. import onednn
from ..base import ChangeModel
from ..blocks import check_choice, check_int
from ..outputs import ChangeOutput
from . import fast
from .heads import CVAPSHead, ProjectionHead
from .losses import MemoryQueues, bscc_loss, class_queries, global_sacl, local_sacl


def _up4(x: torch.Tensor) -> torch.Tensor:
    """``nn.UpsamplingBilinear2d(scale_factor=4)`` of the released code (bilinear, align_corners=True)."""
    return F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=True)


class AddMerge(nn.Module):
    """smp's FPN ``MergeBlock("add")`` without its ``torch.stack(x).sum(0)``: the sum of the four pyramid maps
    accumulated into the first sum, instead of a stacked copy of all four (same values; on CPU in channels_last
    the stacked reduction took 13 % of ClearSCD's inference)."""

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:  # noqa: D102
        out = x[0] + x[1]
        for t in x[2:]:
            out.add_(t)
        return out


def native_same_padding(encoder: nn.Module) -> nn.Module:
    """Replace the stride-1 "same"-padding convolutions of efficientnet-pytorch by plain ``nn.Conv2d`` with
    symmetric padding ``k // 2``: the same zero padding without the ``F.pad`` copy of every activation (the
    parameters, their names and the outputs are unchanged; stride-2 convolutions keep TF's asymmetric padding).
    """
    for module in list(encoder.modules()):
        for name, child in list(module.named_children()):
            if "SamePadding" not in type(child).__name__ or not isinstance(child, nn.Conv2d):
                continue
            k, d = child.kernel_size, child.dilation
            if child.stride != (1, 1) or k[0] % 2 == 0 or k[1] % 2 == 0:
                continue
            conv = nn.Conv2d(child.in_channels, child.out_channels, k, 1, (d[0] * (k[0] // 2), d[1] * (k[1] // 2)),
                             d, child.groups, child.bias is not None, device=child.weight.device,
                             dtype=child.weight.dtype)
            conv.weight = child.weight
            conv.bias = child.bias
            setattr(module, name, conv)
    return encoder


def build_encoder(in_channels: int, weights: str | Path | None) -> nn.Module:
    """smp's EfficientNet-b0 encoder (depth 5), with real ImageNet weights when asked.

    ``weights``: ``None`` keeps PyTorch's default initialisation, which is what the released code trains from
    (its ``_init_weighets`` matches no key and loads nothing); ``"imagenet"`` downloads smp's weights (online
    only); a local file path loads that state dict (keys with or without an ``encoder.`` prefix).
    """
    from segmentation_models_pytorch.encoders import get_encoder

    from ..siam_unet import _is_weight_file, load_encoder_weights

    local = weights is not None and _is_weight_file(str(weights))
    try:
        encoder = get_encoder("efficientnet-b0", in_channels=in_channels, depth=5,
                              weights=None if local else weights)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"model argument 'encoder_weights': {exc}") from exc
    if local:
        load_encoder_weights(encoder, str(weights))
    return encoder


class _KeepBNStats:
    """Recompute context of gradient checkpointing: BatchNorm running statistics and batch counters stay as they
    are (the recomputed forward would otherwise update them a second time). Re-entrant: a graph kept with
    ``retain_graph`` may be recomputed more than once."""

    def __init__(self, bns: list[nn.modules.batchnorm._BatchNorm]) -> None:
        self.bns = bns
        self.saved: list[tuple[float | None, torch.Tensor | None]] = []

    def __enter__(self) -> None:
        self.saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
                      for m in self.bns]
        for m in self.bns:
            m.momentum = 0.0

    def __exit__(self, *exc: object) -> None:
        for m, (mom, count) in zip(self.bns, self.saved, strict=True):
            m.momentum = mom
            if count is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(count)


def checkpointed_encoder_forward(encoder: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """smp ``EfficientNetEncoder.forward`` (depth 5) with every block under activation checkpointing.

    Only block outputs are kept for backward; each block's internals are recomputed during backward (one extra
    encoder forward), which cuts the encoder's activation memory several times (it is ~90 % of the training
    memory at 512 px). Outputs and gradients are the same; BatchNorm running statistics are updated once.
    """
    bns = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def context() -> tuple[contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]]:
        return contextlib.nullcontext(), _KeepBNStats(bns)

    def stem(t: torch.Tensor) -> torch.Tensor:
        return encoder._swish(encoder._bn0(encoder._conv_stem(t)))

    features = [x]
    x = checkpoint(stem, x, use_reentrant=False, context_fn=context)
    features.append(x)
    n = len(encoder._blocks)
    for i, block in enumerate(encoder._blocks):
        rate = encoder._drop_connect_rate * i / n
        x = checkpoint(block, x, rate, use_reentrant=False, context_fn=context)
        if i in encoder._out_indexes:
            features.append(x)
    return features


class ClearSCD(ChangeModel):
    """ClearSCD (Tang et al., ISPRS J. P&RS 211, 2024): semantic change detection.

    Args:
        in_channels: bands of one date.
        num_classes: semantic classes ``K`` (9 for Hi-UCD); label values ``>= K`` are ignored by SACL.
        encoder_weights: ``None`` (released behaviour: no ImageNet weights), ``"imagenet"`` or a local file.
        pyramid_channels, segmentation_channels: FPN widths (256, 128); smaller widths are for tests.
        decoder_dropout: Dropout2d after the FPN merge (0.2, smp's default).
        cvaps_input: ``"logits"`` (released: ``|z_A - z_B|``) or ``"softmax"`` (paper text: posteriors).
        cvaps_convs: conv-BN-ReLU blocks of the CVAPS head (3).
        sacl_local, sacl_global: the two SACL terms (both on in ClearSCD).
        hard_sampling: hard-pixel weighted global queries (on) instead of plain class means.
        warmup_epochs: epochs (counted from 1, as released) in which the global term only fills the queues.
        sample_num, temperature, contrast_weight: local SACL (1024 pixels per class and date, 0.1, 0.1).
        queue_len, enqueue_len: memory size per class and date (512) and pixels pushed per step (64).
        bscc, bscc_weight, bscc_margin: BSCC term (on, 0.1, 2.0).
        siamese_batch: in training, run both dates through the encoder and the SACL projection head as one
            batch (their BatchNorm statistics are then pooled over both dates). ``False`` (default) runs one pass
            per date like the released code (encoder A, encoder B, then the decoder and the projection head per
            date), which is also faster on CPU at 512 px (smaller working set). In eval both give the same
            result and the dates are always batched.
        checkpoint_encoder: in training, recompute the encoder's activations during backward instead of keeping
            them (about 1/3 of the training memory at 512 px for one extra encoder forward). Same results.
        cpu_eval_chunk: in eval on CPU, run at most this many pairs per pass (0: the whole batch). Large
            batches of 512 px tiles overflow the CPU caches (the released model is ~2.5x slower per pair at batch
            8 than at batch 1); chunking keeps batch-8 throughput at the batch-1 rate. Same results (eval-mode
            BatchNorm and GroupNorm are per sample).
    """

    task = "semantic"
    input_divisor = 32
    #: what the BatchNorms of the Siamese parts (encoder, SACL projection head) see in training by default:
    #: each date's batch on its own, as in the released code (tests/models/test_siamese_batchnorm.py)
    siamese_bn = "per_date"
    cpu_channels_last: bool = True  # CPU eval speed switch (benchmarks compare both); same results
    cpu_fused_encoder: bool = True  # CPU inference speed switch: BN-folded, activation-fused encoder (fast.py)

    def __init__(
        self, in_channels: int = 3, num_classes: int = 9, encoder_weights: str | None = None,
        pyramid_channels: int = 256, segmentation_channels: int = 128, decoder_dropout: float = 0.2,
        cvaps_input: str = "logits", cvaps_convs: int = 3, sacl_local: bool = True, sacl_global: bool = True,
        hard_sampling: bool = True, warmup_epochs: int = 1, sample_num: int = 1024, temperature: float = 0.1,
        contrast_weight: float = 0.1, queue_len: int = 512, enqueue_len: int = 64, bscc: bool = True,
        bscc_weight: float = 0.1, bscc_margin: float = 2.0, siamese_batch: bool = False,
        checkpoint_encoder: bool = True, cpu_eval_chunk: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("pyramid_channels", pyramid_channels), ("sample_num", sample_num),
                            ("queue_len", queue_len), ("enqueue_len", enqueue_len)):
            check_int(name, value)
        check_int("cvaps_convs", cvaps_convs, 0)
        check_int("cpu_eval_chunk", cpu_eval_chunk, 0)
        check_int("warmup_epochs", warmup_epochs, 0)
        check_choice("cvaps_input", cvaps_input, ("logits", "softmax"))
        if not isinstance(segmentation_channels, int) or segmentation_channels < 32 or segmentation_channels % 32:
            raise ConfigError(f"model argument 'segmentation_channels' must be a positive multiple of 32 "
                              f"(GroupNorm of 32 groups), got {segmentation_channels!r}")
        if queue_len % enqueue_len:
            raise ConfigError(f"model argument 'queue_len' ({queue_len}) must be a multiple of 'enqueue_len' "
                              f"({enqueue_len})")
        if not 0 <= decoder_dropout < 1:
            raise ConfigError(f"model argument 'decoder_dropout' must be in [0, 1), got {decoder_dropout!r}")
        from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

        self.in_channels, self.num_classes = in_channels, num_classes
        self.cvaps_input, self.siamese_batch, self.checkpoint_encoder = cvaps_input, siamese_batch, checkpoint_encoder
        self.cpu_eval_chunk = cpu_eval_chunk
        self.sacl_local, self.sacl_global, self.hard_sampling = sacl_local, sacl_global, hard_sampling
        self.warmup_epochs, self.sample_num, self.temperature = warmup_epochs, sample_num, temperature
        self.contrast_weight, self.bscc, self.bscc_weight, self.bscc_margin = contrast_weight, bscc, bscc_weight, \
            bscc_margin
        self.current_epoch = 0  # set by the engine at each training epoch start (SACL warm-up)
        self.encoder = native_same_padding(build_encoder(in_channels, encoder_weights))
        self.decoder = FPNDecoder(encoder_channels=list(self.encoder.out_channels), encoder_depth=5,
                                  pyramid_channels=pyramid_channels, segmentation_channels=segmentation_channels,
                                  dropout=decoder_dropout, merge_policy="add")
        self.decoder.merge = AddMerge()
        self.head_seg = nn.Conv2d(segmentation_channels, num_classes, 3, padding=1)  # smp SegmentationHead, x1
        self.head_bcd = CVAPSHead(num_classes, cvaps_convs)
        self.proj_head = ProjectionHead(segmentation_channels, 32)
        self.queues = MemoryQueues(num_classes, segmentation_channels, queue_len, enqueue_len)

    @property
    def in_warmup(self) -> bool:
        """Global SACL only fills the queues while ``current_epoch + 1 <= warmup_epochs`` (epochs from 1)."""
        return int(self.current_epoch) + 1 <= self.warmup_epochs

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.checkpoint_encoder and self.training and torch.is_grad_enabled():
            return checkpointed_encoder_forward(self.encoder, x)
        if self.cpu_fused_encoder and not self.training and onednn.usable(x) and fast.supported(self.encoder):
            return fast.encoder_forward(self.encoder, x)
        return self.encoder(x)

    def _features(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.siamese_batch or not self.training:
            feats = self.decoder(self._encode(torch.cat([a, b], 0)))
            return feats[: a.shape[0]], feats[a.shape[0] :]
        # the released order: encoder A, encoder B, decoder A, decoder B (so that, from one seed, drop-connect
        # and decoder dropout draw the same masks as the authors' code)
        enc_a, enc_b = self._encode(a), self._encode(b)
        return self.decoder(enc_a), self.decoder(enc_b)

    def _project(self, feat_a: torch.Tensor, feat_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SACL projections of both dates ``(N, C, h, w)`` each.

        As released, the head runs once per date (A, then B), so its BatchNorm normalises each date with that
        date's statistics and updates its running statistics twice; with ``siamese_batch`` it runs once over
        both dates (pooled statistics, one update), like the encoder.
        """
        if self.siamese_batch:
            proj = self.proj_head(torch.cat([feat_a, feat_b], 0))
            return proj[: feat_a.shape[0]], proj[feat_a.shape[0] :]
        return self.proj_head(feat_a), self.proj_head(feat_b)

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        """Both dates' class logits and the change logit at input size; features in ``aux`` in training."""
        self.check_input(a, b)
        k = self.cpu_eval_chunk
        if k and not self.training and a.device.type == "cpu" and a.shape[0] > k:
            parts = [self._forward(a[i : i + k], b[i : i + k]) for i in range(0, a.shape[0], k)]
            return ChangeOutput(change=torch.cat([p.change for p in parts]),
                                sem_a=torch.cat([p.sem_a for p in parts]),  # type: ignore[misc]
                                sem_b=torch.cat([p.sem_b for p in parts]))  # type: ignore[misc]
        return self._forward(a, b)

    def _forward(self, a: torch.Tensor, b: torch.Tensor) -> ChangeOutput:
        if self.cpu_channels_last and not self.training and a.device.type == "cpu":
            # oneDNN convs and, above all, PyTorch's CPU upsampling kernels are several times faster in NHWC
            a, b = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
        feat_a, feat_b = self._features(a, b)
        n = feat_a.shape[0]
        logits = self.head_seg(torch.cat([feat_a, feat_b], 0))
        seg_a, seg_b = logits[:n], logits[n:]
        if self.cvaps_input == "softmax":
            diff = (seg_a.softmax(1) - seg_b.softmax(1)).abs()
        else:
            diff = (seg_a - seg_b).abs()
        change_low = self.head_bcd(diff)
        up = _up4(torch.cat([change_low, logits[:n], logits[n:]], 1))
        aux: dict[str, torch.Tensor] = {}
        if self.training:
            aux = {"feat_a": feat_a, "feat_b": feat_b, "seg_low_a": seg_a, "seg_low_b": seg_b,
                   "change_low": change_low}
            if self.sacl_local or self.sacl_global:
                aux["proj_a"], aux["proj_b"] = self._project(feat_a, feat_b)
        k = self.num_classes
        return ChangeOutput(change=up[:, :1], sem_a=up[:, 1 : 1 + k], sem_b=up[:, 1 + k :], aux=aux)

    def extra_losses(self, output: ChangeOutput, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """SACL (``sacl_local``, ``sacl_global``) and weighted BSCC (``bscc``) for one training step.

        Needs ``batch["sem_a"]`` / ``batch["sem_b"]`` for SACL (skipped without them). During warm-up the global
        term only enqueues and is absent from the result. Pushes this step's pixels into the queues.
        """
        aux = output.aux
        if "feat_a" not in aux:
            return {}
        terms: dict[str, torch.Tensor] = {}
        fa, fb = aux["feat_a"], aux["feat_b"]
        if (self.sacl_local or self.sacl_global) and "sem_a" in batch and "sem_b" in batch:
            size = fa.shape[-2:]
            lab_a = F.interpolate(batch["sem_a"][:, None].float(), size=size, mode="nearest")[:, 0].long()
            lab_b = F.interpolate(batch["sem_b"][:, None].float(), size=size, mode="nearest")[:, 0].long()
            if self.sacl_local:
                terms["sacl_local"] = local_sacl(aux["proj_a"], aux["proj_b"], fa, fb, lab_a, lab_b,
                                                 self.num_classes, self.sample_num, self.temperature,
                                                 self.contrast_weight)
            if self.sacl_global:
                if not self.in_warmup:
                    queue = self.queues.queue
                    total = fa.new_zeros(())
                    for proj, seg, lab in ((aux["proj_a"], aux["seg_low_a"], lab_a),
                                           (aux["proj_b"], aux["seg_low_b"], lab_b)):
                        q, cls = class_queries(proj, seg, lab, self.num_classes, self.hard_sampling)
                        total = total + global_sacl(q, cls, queue)
                    terms["sacl_global"] = total
                self.queues.push(0, fa, lab_a)
                self.queues.push(1, fb, lab_b)
        if self.bscc:
            prob = torch.sigmoid(aux["change_low"].float())
            terms["bscc"] = self.bscc_weight * bscc_loss((fa - fb).abs().float(), prob, self.bscc_margin)
        return terms
