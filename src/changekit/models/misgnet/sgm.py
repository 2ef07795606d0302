"""The Semantics Guidance Module (SGM) of MISGNet: graph projection, cross-temporal graph interaction.

Per pyramid level, each date's feature map is softly clustered into ``K`` graph nodes around learnable anchors
(:class:`GraphNet`); the two dates' graphs exchange information through an affinity between them and cascaded
graph convolutions (:class:`MutualModule`); the updated nodes are projected back onto the pixels through the
soft assignment and added to the input features (:class:`MutualNet`).

Faithful to the released ``models/mynet/MGL/basicnet5.py`` (JackLiu-97/MISGNet @ 2c1adb1), including:

* the node tensor ``(B, K, C)`` is *reshaped* (a memory reinterpretation), not transposed, to ``(B, C, K)``;
* each :class:`CascadeGCNet` owns three graph-convolution weights but applies only the first two (the third is
  kept so that parameter counts and checkpoints match; it is frozen, see :meth:`MutualNet.freeze_unused`);
* the init: anchors and sigmas ``U(0, 1)``; GCN weights ``U(+-1/sqrt(C))``; ``reset_params`` (conv
  ``U(+-1/sqrt(C))``, BN weight ``U(0, 1)``, BN bias 0) on ``x1_conv1``, ``x2_conv1``, ``x2_conv2`` and
  ``x2_conv11`` only (the released code resets ``x2_conv1``/``x2_conv2`` twice by a copy-paste slip and leaves
  ``x1_conv11``/``x1_conv22`` at PyTorch's default).

Differences that change no result: the released per-node Python loops are replaced by batched tensor ops, and
the re-projection's 1x1 convolution is applied to the ``K`` nodes before they are spread over the ``N`` pixels
(``W (V A) = (W V) A``; ``K <= 8`` against ``N`` up to 4096 pixels), with the pixel map produced directly in
channels_last layout. ``MutualModule`` takes no ``dropout`` argument (the released ``MutualNet`` passes one and
raises ``TypeError``; the authors' compiled ``.pyc`` shows it was unused).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import fold_bn


class NodeConv(nn.Module):
    """1x1 conv (no bias) -> BatchNorm -> ReLU on a node tensor ``(B, C, K)`` (released: ``BasicConv2d``).

    The node tensor is viewed as ``(B, C, K, 1)`` exactly as in the released code, so BatchNorm's training
    statistics are taken over the ``B * K`` nodes.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.stdv = 1.0 / math.sqrt(dim)

    def reset_params(self) -> None:
        """The released ``BasicConv2d.reset_params``: conv ``U(+-1/sqrt(C))``, BN weight ``U(0, 1)``, bias 0."""
        with torch.no_grad():
            self.conv.weight.uniform_(-self.stdv, self.stdv)
            self.bn.weight.uniform_()
            self.bn.bias.zero_()

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.relu(self.bn(self.conv(nodes.unsqueeze(3))), inplace=True).squeeze(3)


class GraphNet(nn.Module):
    """Soft clustering of a feature map into ``node_num`` graph nodes (the SGM's graph projection).

    For pixel ``x`` and node ``k``: ``r_k = (x - anchor_k) / sigmoid(sigma_k)``,
    ``a_k = softmax_k(-|r_k|^2 / 2)``, ``node_k = sum_pixels a_k r_k / (sum_pixels a_k + 1e-9)``; nodes are
    L2-normalised per node, then as one ``K*C`` vector, then reshaped (not transposed) to ``(B, C, K)``.

    Returns:
        ``(nodes (B, C, K), assignment (B, K, N))`` with ``N = H * W``.
    """

    def __init__(self, node_num: int, dim: int) -> None:
        super().__init__()
        self.node_num = node_num
        self.dim = dim
        self.anchor = nn.Parameter(torch.rand(node_num, dim))
        self.sigma = nn.Parameter(torch.rand(node_num, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        # Clustering stays in float32 under autocast: softmax of squared distances and normalised sums.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._cluster(x)

    def _cluster(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        k = self.node_num
        # (B, N, C): free for channels_last input.
        pix = x.permute(0, 2, 3, 1).reshape(b, h * w, c).float()
        inv_sigma = torch.sigmoid(self.sigma.float()).reciprocal()  # (K, C)
        anchor = self.anchor.float()
        residual = pix.unsqueeze(2) - anchor  # (B, N, K, C), all nodes at once
        if torch.is_grad_enabled():
            dist = (residual * inv_sigma).square().sum(-1)
        else:  # same values; no autograd, so the temporaries are updated in place
            dist = residual.mul_(inv_sigma).square_().sum(-1)
        assign = torch.softmax(dist.mul_(-0.5), dim=2)  # (B, N, K)
        mass = assign.sum(1)  # (B, K)
        # sum_n a_kn (x_n - anchor_k) / sigma_k  ==  (A^T X - anchor_k * mass_k) / sigma_k
        weighted = torch.bmm(assign.transpose(1, 2), pix)  # (B, K, C)
        nodes = (weighted - anchor * mass.unsqueeze(2)) * inv_sigma / (mass.unsqueeze(2) + 1e-9)
        nodes = F.normalize(nodes, p=2, dim=2)
        nodes = F.normalize(nodes.reshape(b, k * c), p=2, dim=1)
        nodes = nodes.reshape(b, c, k)  # the released reshape: a reinterpretation, not a transpose
        return nodes.to(x.dtype), assign.transpose(1, 2).to(x.dtype)


class CascadeGCNet(nn.Module):
    """Two chained graph convolutions, then ReLU; owns a third weight that is never applied (as released).

    Each graph convolution: ``adj = softmax_rows(X^T X)``, ``out = (adj (X^T W))^T`` with ``X (B, C, K)``, no
    bias. The weights are ``(C, C)`` matrices named ``gcn1.weight`` .. ``gcn3.weight``.
    """

    loop = 2

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gcn1 = _GraphConv(dim)
        self.gcn2 = _GraphConv(dim)
        self.gcn3 = _GraphConv(dim)  # unused by the released forward (loop=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for gcn in (self.gcn1, self.gcn2):
            xt = x.transpose(1, 2)  # (B, K, C)
            adj = torch.softmax(torch.bmm(xt, x), dim=2)  # (B, K, K)
            x = torch.bmm(adj, torch.matmul(xt, gcn.weight)).transpose(1, 2)  # (B, C, K)
        return F.relu(x)


class _GraphConv(nn.Module):
    """Holds one graph-convolution weight ``(C, C)`` initialised ``U(+-1/sqrt(C))`` (released GraphConvNet)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        stdv = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(dim, dim).uniform_(-stdv, stdv))


class MutualModule(nn.Module):
    """Cross-temporal graph interaction (released ``MutualModule0``), constructible without ``dropout``.

    ``forward(q, k, v, assign, size)``: ``A = softmax_last(q^T k)`` (K x K); ``m = (A v^T)^T``;
    ``v' = gcn2(gcn(gcn3(v) + m))``; the nodes go back to the pixels through ``assign`` and a 1x1 conv + BN +
    ReLU (applied here to the nodes first, which is the same linear map), giving a ``(B, C, H, W)`` map.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gcn = CascadeGCNet(dim)
        self.gcn2 = CascadeGCNet(dim)
        self.gcn3 = CascadeGCNet(dim)
        self.conv = _PixelConv(dim)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, assign: torch.Tensor, size: torch.Size
    ) -> torch.Tensor:  # noqa: D102
        affinity = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (B, K, K)
        m = torch.bmm(affinity, v.transpose(1, 2)).transpose(1, 2)  # (B, C, K)
        v = self.gcn2(self.gcn(self.gcn3(v) + m))
        return self.conv(v, assign, size)


class _PixelConv(nn.Module):
    """Re-projection ``ReLU(BN(W (V A)))`` computed as ``(W V) A``; returns a channels_last ``(B, C, H, W)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, nodes: torch.Tensor, assign: torch.Tensor, size: torch.Size) -> torch.Tensor:  # noqa: D102
        b, c, h, w = size
        if not self.bn.training and not torch.is_grad_enabled():
            # eval: BN folded into W, its shift added to every node: the assignment sums to 1 over the nodes
            # (softmax), so sum_k a_kn (v_k + shift) = sum_k a_kn v_k + shift. One pass over the pixels fewer.
            weight, shift = fold_bn(self.conv.weight, None, self.bn)
            wv = torch.matmul(weight.view(c, c), nodes).add_(shift.view(1, c, 1))  # (B, C, K)
            pix = torch.bmm(assign.transpose(1, 2), wv.transpose(1, 2))  # (B, N, C)
            return pix.view(b, h, w, c).permute(0, 3, 1, 2).relu_()
        wv = torch.matmul(self.conv.weight.view(c, c), nodes)  # (B, C, K)
        pix = torch.bmm(assign.transpose(1, 2), wv.transpose(1, 2))  # (B, N, C)
        out = pix.view(b, h, w, c).permute(0, 3, 1, 2)  # channels_last view of (B, C, H, W)
        return F.relu(self.bn(out), inplace=True)


class MutualNet(nn.Module):
    """One SGM level: graph projection of both dates, bidirectional interaction, residual add.

    Args:
        dim: channels ``C`` of the level.
        num_clusters: graph nodes ``K`` (2, 4, 8 at MISGNet's three levels).

    Parameters: ``26 C^2 + 16 C + 4 K C`` (of which ``6 C^2`` are the never-applied third GCN weights).
    """

    def __init__(self, dim: int, num_clusters: int) -> None:
        super().__init__()
        self.dim = dim
        self.x1_proj0 = GraphNet(num_clusters, dim)
        self.x2_proj0 = GraphNet(num_clusters, dim)
        self.x1_conv1 = NodeConv(dim)
        self.x2_conv1 = NodeConv(dim)
        self.x2_conv2 = NodeConv(dim)
        self.x2_conv11 = NodeConv(dim)
        self.x1_conv11 = NodeConv(dim)  # default init in the released code
        self.x1_conv22 = NodeConv(dim)  # default init in the released code
        for conv in (self.x1_conv1, self.x2_conv1, self.x2_conv2, self.x2_conv11, self.x2_conv1, self.x2_conv2):
            conv.reset_params()  # the released order, double resets included
        self.r2e = MutualModule(dim)
        self.r2e2 = MutualModule(dim)

    def unused_parameters(self) -> list[nn.Parameter]:
        """The third GCN weight of every cascade: registered (checkpoints, counts) but never applied."""
        return [c.gcn3.weight for m in (self.r2e, self.r2e2) for c in (m.gcn, m.gcn2, m.gcn3)]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        g1, assign1 = self.x1_proj0(x1)
        g2, assign2 = self.x2_proj0(x2)
        x2_g = self.r2e(self.x1_conv1(g1), self.x2_conv1(g2), self.x2_conv2(g2), assign2, x2.shape)
        x1_g = self.r2e2(self.x2_conv11(g2), self.x1_conv11(g1), self.x1_conv22(g1), assign1, x1.shape)
        if torch.is_grad_enabled():
            return x1 + x1_g, x2 + x2_g
        return x1_g.add_(x1), x2_g.add_(x2)  # the fresh re-projections take the residual in place
