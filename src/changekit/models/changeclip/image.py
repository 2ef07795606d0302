"""CLIP image towers adapted to dense prediction: modified ResNet-50 and ViT-B/16, both returning four stages
plus a global embedding and dense (per-location) embeddings in CLIP's joint image-text space.

* :class:`CLIPResNetWithAttention` (DenseCLIP's ``CLIPResNetWithAttention``): CLIP's "ResNet-D" stem (three 3x3
  convs, average pool), bottlenecks that stride with an average pool (anti-aliasing), stage outputs
  256@1/4 ... 2048@1/32 (at width 64), and the attention pool applied to *every* location: its query-key-value
  projections turn the last stage into a global token (B, D) and local embeddings (B, D, H/32, W/32). The
  positional table is sized for ``input_resolution`` (512 -> 16 x 16 + 1 rows, interpolated from CLIP's 7 x 7
  when the weights are loaded) and bilinearly resized to the actual feature size at run time.
* :class:`CLIPVisionTransformer` (``get_embeddings=True``): patch tokens of blocks 3/5/7/11 are reshaped to maps
  and brought to 1/4, 1/8, 1/16 and 1/32 by the four adapters (``fpn1``: GN, 2x2 transposed conv, BN, GELU,
  2x2 transposed conv; ``fpn2``: GN, transposed conv; ``fpn3``: GN; ``fpn4``: GN, 2x2 max-pool). ``ln_post`` and
  ``proj`` applied to all tokens give the global (class) embedding and 512@1/16 local embeddings. As in the
  original, the class token receives ``class_embedding`` twice (once as the token, once added to its position).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Transformer


class Bottleneck(nn.Module):
    """CLIP's bottleneck: 1x1, 3x3, (avg-pool when strided), 1x1 x4; the shortcut pools before its 1x1 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample: nn.Sequential | None = None
        if stride > 1 or inplanes != out:
            self.downsample = nn.Sequential()
            self.downsample.add_module("-1", nn.AvgPool2d(stride))
            self.downsample.add_module("0", nn.Conv2d(inplanes, out, 1, bias=False))
            self.downsample.add_module("1", nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(self.avgpool(y)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(y + identity, inplace=True)


class AttentionPool2d(nn.Module):
    """CLIP's attention pool evaluated at every location (global token = attention from the mean token).

    Args:
        spacial_dim: side of the positional table's grid (``input_resolution // 32``).
        embed_dim: channels of the last stage.
        num_heads: attention heads.
        output_dim: embedding width.
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads
        self.spacial_dim = spacial_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, C, H, W)`` -> global ``(N, D)`` and local ``(N, D, H, W)`` embeddings."""
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)
        pos = self.positional_embedding
        s = self.spacial_dim
        spatial = pos[1:].reshape(1, s, s, c).permute(0, 3, 1, 2)
        if (h, w) != (s, s):
            spatial = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=False)
        pos = torch.cat([pos[:1], spatial.reshape(c, h * w).t()], 0)
        tokens = tokens + pos.to(tokens.dtype)
        heads = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, h * w + 1, heads, c // heads).transpose(1, 2)

        q, k, v = split(self.q_proj(tokens)), split(self.k_proj(tokens)), split(self.v_proj(tokens))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, h * w + 1, c)
        out = self.c_proj(out).transpose(1, 2)  # (N, D, HW+1)
        return out[:, :, 0], out[:, :, 1:].reshape(n, -1, h, w)


class CLIPResNetWithAttention(nn.Module):
    """CLIP's modified ResNet returning ``[s1, s2, s3, s4]`` and ``(global, local)`` embeddings.

    Args:
        layers: bottlenecks per stage (RN50: 3, 4, 6, 3).
        width: stem width (64); stage ``i`` outputs ``width * 4 * 2**i`` channels.
        output_dim: embedding width (1024 for RN50).
        heads: attention-pool heads (CLIP: ``width * 32 // 64``).
        input_resolution: sizes the positional table (512 in ChangeCLIP: 16 x 16 + 1 rows).
        in_channels: bands per date (3 for CLIP weights; extra bands get the mean RGB filter when loaded).
    """

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 64, output_dim: int = 1024,
                 heads: int = 32, input_resolution: int = 512, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        for i, blocks in enumerate(layers):
            planes = width * 2**i
            stage = [Bottleneck(inplanes, planes, 1 if i == 0 else 2)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.attnpool = AttentionPool2d(input_resolution // 32, inplanes, heads, output_dim)
        self.stage_channels = [width * 4 * 2**i for i in range(4)]
        self.embed_dim = output_dim
        self.embed_stage = 3  # the local embeddings live at 1/32, like stage 4

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Stages at 1/4..1/32, global embedding ``(N, D)``, local embeddings ``(N, D, H/32, W/32)``."""
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.relu(bn(conv(x)), inplace=True)
        x = self.avgpool(x)
        stages = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            stages.append(x)
        glob, local = self.attnpool(x)
        return stages, glob, local


class CLIPVisionTransformer(nn.Module):
    """CLIP ViT with four-level adapters and dense embeddings (patch 16 only).

    Args:
        input_resolution: sizes the positional table (256 in ChangeCLIP: 16 x 16 + 1 rows).
        patch_size: 16.
        width, layers, heads: transformer shape (ViT-B: 768, 12, 12).
        output_dim: embedding width (512).
        drop_path_rate: stochastic depth of the last block (0.1).
        out_indices: blocks whose patch tokens feed the adapters.
        in_channels: bands per date.
    """

    def __init__(self, input_resolution: int = 256, patch_size: int = 16, width: int = 768, layers: int = 12,
                 heads: int = 12, output_dim: int = 512, drop_path_rate: float = 0.1,
                 out_indices: tuple[int, ...] = (3, 5, 7, 11), in_channels: int = 3) -> None:
        super().__init__()
        if patch_size != 16:
            raise ValueError(f"patch_size: only 16 is supported (ChangeCLIP's ViT-B/16), got {patch_size}")
        if len(out_indices) != 4 or max(out_indices) >= layers:
            raise ValueError(f"out_indices: need four block indices below {layers}, got {out_indices}")
        scale = width**-0.5
        self.conv1 = nn.Conv2d(in_channels, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.spatial_size = input_resolution // patch_size
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.spatial_size**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, drop_path_rate)
        self.out_indices = tuple(out_indices)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))
        self.fpn1 = nn.Sequential(
            nn.GroupNorm(1, width), nn.ConvTranspose2d(width, width, 2, stride=2), nn.BatchNorm2d(width), nn.GELU(),
            nn.ConvTranspose2d(width, width, 2, stride=2),
        )
        self.fpn2 = nn.Sequential(nn.GroupNorm(1, width), nn.ConvTranspose2d(width, width, 2, stride=2))
        self.fpn3 = nn.GroupNorm(1, width)
        self.fpn4 = nn.Sequential(nn.GroupNorm(1, width), nn.MaxPool2d(2, stride=2))
        self.stage_channels = [width] * 4
        self.embed_dim = output_dim
        self.embed_stage = 2  # the local embeddings live at 1/16, like the third adapter output

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Adapter outputs at 1/4..1/32, global embedding ``(N, D)``, local embeddings ``(N, D, H/16, W/16)``."""
        x = self.conv1(x)
        n, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(n, 1, c)
        x = torch.cat([cls, x], 1)
        pos = self.positional_embedding.to(x.dtype)
        s = self.spatial_size
        spatial = pos[1:].reshape(1, s, s, c).permute(0, 3, 1, 2)
        spatial = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=False)
        cls_pos = (pos[0] + self.class_embedding.to(x.dtype)).reshape(1, 1, c)
        x = x + torch.cat([cls_pos, spatial.reshape(1, c, h * w).transpose(1, 2)], 1)
        x = self.ln_pre(x)
        maps = []
        for i, block in enumerate(self.transformer.resblocks):
            x = block(x)
            if i in self.out_indices:
                maps.append(x[:, 1:].transpose(1, 2).reshape(n, c, h, w))
        stages = [op(m) for op, m in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), maps, strict=True)]
        emb = self.ln_post(x) @ self.proj
        local = emb[:, 1:].transpose(1, 2).reshape(n, -1, h, w)
        return stages, emb[:, 0], local
