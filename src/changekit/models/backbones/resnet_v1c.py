"""ResNet-v1c feature extractor (mmseg's ``ResNetV1c``, BasicBlock depths 18 and 34) for siamese CD models.

ResNet-v1c ("Bag of Tricks", He et al., CVPR 2019) replaces the 7x7 stem convolution by three 3x3 convolutions
(``in -> w/2 -> w/2 -> w``, the first with stride 2) and keeps the plain strided 1x1 shortcut (no average-pool
"v1d" shortcut). It is the backbone of open-cd's BIT (``bit_r18``) and ChangerEx (``changer_r18``) configs;
timm's ``ResNet(stem_type="deep")`` without ``avg_down`` has the same layout, but not the per-stage strides and
stage count those configs set, hence this small module.

The module and parameter names follow mmseg's (``stem.0``, ``layer1.0.conv1``, ``layer1.0.bn1``,
``layer2.0.downsample.0``...), so open-mmlab's ImageNet checkpoint ``resnet18_v1c`` and the ``backbone.*`` part
of open-cd checkpoints load without renaming.

Initialisation follows mmseg when no weights are loaded: Kaiming-normal convolutions (fan-out, ReLU), BatchNorm
weight 1 and bias 0, and the last BatchNorm of every residual block at weight 0 (``zero_init_residual``), so each
block starts as the identity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
import torch
from torch import nn

from ...errors import CheckpointError, ConfigError
from ..blocks import init_conv_bn

log = logging.getLogger(__name__)

#: BasicBlock repeats per stage.
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
#: open-mmlab's ImageNet weights (``open-mmlab://resnet18_v1c`` in mmseg/open-cd configs).
IMAGENET_URLS = {18: "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth"}


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or strided 1x1 conv-BN) shortcut; ReLU after the sum."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetV1c(nn.Module):
    """Deep-stem ResNet (BasicBlock) returning the output of every stage.

    Args:
        in_channels: image bands.
        depth: 18 or 34.
        num_stages: stages built (1-4); open-cd's BIT uses 3, ChangerEx 4.
        strides: stride of the first block of each stage (``num_stages`` entries).
        dilations: dilation of the first block's first convolution in each stage (``num_stages`` entries; mmseg's
            ``contract_dilation`` halves it there, as here: 1 stays 1).
        stem_channels: width of the stem output (its first two convolutions have half of it).
        base_channels: width of stage 1; stage ``i`` has ``base_channels * 2**i``.

    Shapes: ``forward(x)`` with ``x (N, in_channels, H, W)`` returns one map per stage, ``(N, out_channels[i],
    H / s_i, W / s_i)`` where ``s_i`` is 4 times the product of the strides up to stage ``i``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        depth: int = 18,
        num_stages: int = 4,
        strides: tuple[int, ...] = (1, 2, 2, 2),
        dilations: tuple[int, ...] = (1, 1, 1, 1),
        stem_channels: int = 64,
        base_channels: int = 64,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ConfigError(f"model argument 'depth' must be one of {sorted(DEPTHS)}, got {depth!r}")
        if not 1 <= num_stages <= 4 or len(strides) != num_stages or len(dilations) != num_stages:
            raise ConfigError(
                f"ResNetV1c: num_stages must be 1-4 with one stride and dilation per stage, got {num_stages}, "
                f"strides {tuple(strides)}, dilations {tuple(dilations)}"
            )
        self.depth = depth
        half = stem_channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, 2, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, 1, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, stem_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.out_channels: tuple[int, ...] = tuple(base_channels * 2**i for i in range(num_stages))
        prev = stem_channels
        for i, (blocks, stride, dilation, width) in enumerate(
            zip(DEPTHS[depth][:num_stages], strides, dilations, self.out_channels, strict=True)
        ):
            first_dilation = dilation // 2 if dilation > 1 else dilation  # mmseg's contract_dilation
            layer = [BasicBlock(prev, width, stride, first_dilation)]
            layer += [BasicBlock(width, width, 1, dilation) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            prev = width
        self.num_stages = num_stages
        self.reset_parameters()

    @property
    def stages(self) -> list[nn.Module]:
        """The residual stages ``layer1 ... layerN`` (the stem and max-pool run before the first)."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def reset_parameters(self) -> None:
        """mmseg's initialisation of a ResNet trained from scratch (see the module docstring)."""
        init_conv_bn(self)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stem convolutions and max-pool: ``(N, C, H, W) -> (N, stem_channels, H/4, W/4)``."""
        return self.maxpool(self.stem(x))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        x = self.stem_forward(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


def siamese(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n: int, joint: bool) -> torch.Tensor:
    """Apply shared layers ``fn`` to both dates of ``x (2N, ...)`` (date A in the first ``N`` items).

    ``joint``: one call on the whole batch (faster; a BatchNorm in training pools both dates' statistics).
    Otherwise one call per date, as reference code that calls its shared modules once per date, so that each
    BatchNorm normalises a date with that date's statistics. Eval-mode results are the same either way.
    """
    if joint:
        return fn(x)
    return torch.cat([fn(x[:n]), fn(x[n:])], dim=0)


def load_backbone_weights(backbone: ResNetV1c, weights: str | Path | None) -> None:
    """Load ImageNet weights into ``backbone``; ``None`` keeps the random initialisation.

    Args:
        backbone: the module to fill.
        weights: ``"imagenet"`` (open-mmlab's ``resnet<depth>_v1c`` checkpoint, downloaded once into torch's hub
            cache; needs the internet the first time), or a local file holding such a state dict, possibly under a
            prefix (``backbone.`` of an open-cd checkpoint, ``state_dict``...). Keys of stages the backbone does
            not build (``layer4`` for BIT) and the classifier are skipped with a warning; a first convolution
            saved for 3 bands is adapted to other band counts.

    Raises:
        ConfigError: the file does not hold the backbone's weights (names the keys).
        CheckpointError: ``"imagenet"`` and the download failed.
    """
    from ..siam_unet import load_encoder_weights

    if weights is None:
        return
    if not isinstance(weights, str | Path):
        raise ConfigError(f"model argument 'backbone_weights' must be a path or 'imagenet', got {weights!r}")
    path = Path(weights).expanduser()
    if str(weights) == "imagenet":
        path = _download_imagenet(backbone.depth)
    elif not path.is_file():
        raise ConfigError(
            f"model.backbone_weights: file '{path}' does not exist (give a resnet{backbone.depth}_v1c .pth file, "
            "'imagenet' to download open-mmlab's, or null for a random init)"
        )
    try:
        load_encoder_weights(backbone, path)
    except ConfigError as exc:  # the shared loader names its own config key
        raise ConfigError(str(exc).replace("encoder_weights", "model.backbone_weights", 1)) from None
    log.info("loaded ResNet-%d-v1c backbone weights from %s", backbone.depth, path)


def _download_imagenet(depth: int) -> Path:
    url = IMAGENET_URLS.get(depth)
    if url is None:
        raise ConfigError(f"model.backbone_weights: no ImageNet checkpoint known for ResNet-{depth}-v1c; give a file")
    target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except Exception as exc:  # noqa: BLE001 - offline, proxy, HTTP error: never continue without the weights
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(
                f"could not download ResNet-{depth}-v1c ImageNet weights from {url} ({reason}); pass "
                "model.backbone_weights=/path/to/resnet18_v1c.pth, or model.backbone_weights=null for a random init"
            ) from None
    return target


def rename_opencd_keys(state: dict[str, torch.Tensor], head_renames: tuple[tuple[str, str], ...]
                       ) -> dict[str, torch.Tensor]:
    """Keys of an open-cd checkpoint of a ResNet-v1c model to changekit's: ``backbone.*`` is kept (mmseg's names
    are this module's), ``decode_head.*`` becomes ``head.*`` and then each ``(old, new)`` substring of
    ``head_renames`` is replaced, in order. Other keys pass through (loading reports them)."""
    out = {}
    for key, value in state.items():
        if key.startswith("decode_head."):
            key = "head." + key[len("decode_head."):]
            for old, new in head_renames:
                key = key.replace(old, new)
        out[key] = value
    return out
