"""ClearSCD's model-specific losses: SACL (local InfoNCE + global memory queues) and BSCC (seed-systems 1.3.1-2).

Everything is batched over pixels and classes. The released code builds, per class, a ``positives x (1 +
negatives)`` logits matrix (up to 2,048 x 16,000 floats per class, kept for backward); here the InfoNCE term
uses the identity ``CE([p, n_1..n_k], 0) = logaddexp(p, logsumexp(n)) - p``, so only the ``classes x keys``
similarity matrix exists. The values are the same up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_NEG = -1.0e4  # finite "minus infinity" for masked logits: exp() is 0, gradients stay finite


def sample_per_class(labels: torch.Tensor, num_classes: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of up to ``limit`` random pixels of each class, without a per-class loop.

    Args:
        labels: flat int64 class ids ``(P,)``; values outside ``0..num_classes-1`` (ignore) are never drawn.
        num_classes: number of valid classes.
        limit: the most pixels kept per class (ClearSCD's ``sample_num`` / ``enqueue_len``).

    Returns:
        ``(index, cls)``: flat pixel indices and their classes, grouped by class in ascending order.
    """
    p = labels.numel()
    perm = torch.randperm(p, device=labels.device)
    lab = labels[perm]
    lab = torch.where((lab >= 0) & (lab < num_classes), lab, torch.full_like(lab, num_classes))
    order = torch.argsort(lab, stable=True)
    sorted_lab = lab[order]
    counts = torch.bincount(sorted_lab, minlength=num_classes + 1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(p, device=labels.device) - starts[sorted_lab]
    keep = (rank < limit) & (sorted_lab < num_classes)
    return perm[order[keep]], sorted_lab[keep]


def gather_pixels(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``(K, D)`` of ``features`` ``(N, D, H, W)`` at flat pixel indices over ``N*H*W`` (no full copy)."""
    n, d, h, w = features.shape
    flat = features.reshape(n, d, h * w)
    return flat[index // (h * w), :, index % (h * w)]


def local_sacl(
    proj_a: torch.Tensor, proj_b: torch.Tensor, feat_a: torch.Tensor, feat_b: torch.Tensor,
    lab_a: torch.Tensor, lab_b: torch.Tensor, num_classes: int, sample_num: int = 1024,
    temperature: float = 0.1, weight: float = 0.1,
) -> torch.Tensor:
    """Local SACL: per class, InfoNCE between the class anchor and sampled pixel keys of both dates.

    Queries are up to ``sample_num`` random projected pixels per class and date; the anchor of class ``c`` is the
    L2-normalised mean of its queries. Keys are an independent random draw of the un-projected decoder features,
    L2-normalised and not detached. Every key of class ``c`` is one positive against all other-class keys:
    ``CE([a.k+, a.k-_1..] / t, 0)`` averaged over positives, summed over classes, times ``weight`` over the
    number of classes present.

    Args:
        proj_a, proj_b: projected features ``(N, D, h, w)``.
        feat_a, feat_b: decoder features ``(N, D, h, w)``.
        lab_a, lab_b: class maps ``(N, h, w)`` at feature resolution (ignore = any value outside the classes).
    """
    qa, qca = sample_per_class(lab_a.reshape(-1), num_classes, sample_num)
    qb, qcb = sample_per_class(lab_b.reshape(-1), num_classes, sample_num)
    ka, kca = sample_per_class(lab_a.reshape(-1), num_classes, sample_num)
    kb, kcb = sample_per_class(lab_b.reshape(-1), num_classes, sample_num)
    queries = torch.cat([gather_pixels(proj_a, qa), gather_pixels(proj_b, qb)])
    q_cls = torch.cat([qca, qcb])
    if q_cls.numel() == 0:
        return proj_a.sum() * 0.0
    keys = F.normalize(torch.cat([gather_pixels(feat_a, ka), gather_pixels(feat_b, kb)]).float(), dim=1)
    k_cls = torch.cat([kca, kcb])
    present = torch.unique(q_cls)
    sums = torch.zeros(num_classes, queries.shape[1], device=queries.device, dtype=torch.float32)
    sums = sums.index_add(0, q_cls, queries.float())
    anchors = F.normalize(sums[present], dim=1)  # the mean's direction: the count cancels out
    sim = anchors @ keys.t() / temperature  # (classes present, keys)
    pos = k_cls.unsqueeze(0) == present.unsqueeze(1)
    neg_lse = torch.logsumexp(sim.masked_fill(pos, _NEG), dim=1, keepdim=True)
    per_key = torch.logaddexp(sim, neg_lse) - sim
    per_class = (per_key * pos).sum(1) / pos.sum(1).clamp(min=1)
    return per_class.sum() * weight / present.numel()


class MemoryQueues(nn.Module):
    """Per-class, per-date ring buffers of L2-normalised pixel features for global SACL.

    Buffers (saved in checkpoints): ``queue`` ``(2, C, D, L)`` (date, class, feature, slot) and ``ptr`` ``(2, C)``.
    A class is enqueued only when a step gives at least ``enqueue_len`` of its pixels, as in the released code.
    """

    def __init__(self, num_classes: int, dim: int = 128, length: int = 512, enqueue_len: int = 64) -> None:
        super().__init__()
        if length % enqueue_len:
            raise ValueError(f"queue length {length} must be a multiple of enqueue_len {enqueue_len}")
        self.num_classes, self.length, self.enqueue_len = num_classes, length, enqueue_len
        self.register_buffer("queue", F.normalize(torch.randn(2, num_classes, dim, length), dim=2))
        self.register_buffer("ptr", torch.zeros(2, num_classes, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(2, num_classes, dtype=torch.long))

    @torch.no_grad()
    def push(self, date: int, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Enqueue up to ``enqueue_len`` random pixels per class of ``features`` ``(N, D, h, w)``."""
        idx, cls = sample_per_class(labels.reshape(-1), self.num_classes, self.enqueue_len)
        keys = F.normalize(gather_pixels(features.detach(), idx).float(), dim=1)
        counts = torch.bincount(cls, minlength=self.num_classes).tolist()
        start = 0
        for c, n in enumerate(counts):  # at most C small copies per step
            if n >= self.enqueue_len:
                p = int(self.ptr[date, c])
                self.queue[date, c, :, p : p + n] = keys[start : start + n].t().to(self.queue.dtype)
                self.ptr[date, c] = (p + n) % self.length
                self.filled[date, c] = min(int(self.filled[date, c]) + n, self.length)
            start += n


def class_queries(proj: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, num_classes: int,
                  hard: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One L2-normalised query per class present: the weighted mean of its projected pixels.

    With ``hard`` (ClearSCD's ``hard_sampling``) a pixel of class ``c`` weighs ``1 - softmax(logits)_c``, so
    badly classified pixels count more; otherwise all weigh 1 (plain class mean).

    Returns:
        ``(queries (K, D), classes (K,))`` for the ``K`` classes present in ``labels``.
    """
    n, d, h, w = proj.shape
    lab = labels.reshape(n, h * w)
    valid = (lab >= 0) & (lab < num_classes)
    safe = torch.where(valid, lab, 0)
    wpix = valid.float()
    if hard:
        prob = logits.detach().float().softmax(1).reshape(n, num_classes, h * w)
        wpix = (1 - prob.gather(1, safe.unsqueeze(1)).squeeze(1)) * wpix
    onehot = F.one_hot(safe, num_classes).permute(0, 2, 1).to(wpix.dtype) * wpix.unsqueeze(1)  # (n, C, hw)
    sums = torch.einsum("nch,ndh->cd", onehot, proj.reshape(n, d, h * w).float())
    present = torch.unique(lab[valid])
    den = onehot.sum((0, 2))[present].clamp(min=1e-12).unsqueeze(1)
    return F.normalize(sums[present] / den, dim=1), present


def global_sacl(queries: torch.Tensor, classes: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """Cosine loss of class queries against the memory: ``1/2 [mean(1 - pos) + mean(1 + neg)]`` per query.

    Positives are both dates' queues of the query's class, negatives every other class's queues (both
    dates); the result is ``sum over queries / (2 K)`` (one date's share of ClearSCD's ``L_global``).
    """
    if classes.numel() == 0:
        return queries.sum() * 0.0
    two, c, d, length = queue.shape
    mem = queue.detach().clone().permute(2, 0, 1, 3).reshape(d, -1)  # clone: the queue is updated in place later
    means = (queries @ mem).reshape(-1, two, c, length).mean(3)  # (K, 2, C): mean similarity per queue
    pos = F.one_hot(classes, c).to(means.dtype).unsqueeze(1)  # (K, 1, C)
    pos_mean = (means * pos).sum((1, 2)) / two
    neg_mean = (means * (1 - pos)).sum((1, 2)) / (two * (c - 1))
    per_query = ((1 - pos_mean) + (1 + neg_mean)) / 2
    return per_query.sum() / (2 * classes.numel())


def bscc_loss(feat_diff: torch.Tensor, change_prob: torch.Tensor, margin: float = 2.0) -> torch.Tensor:
    """BSCC: contrastive loss on ``|f_A - f_B|``, pseudo-labelled by the model's own change probability.

    With ``p`` the change probability and ``y = round(p)``:
    ``L = 1/2 sum (1-p)[y=0] D^2 / n_u + 1/2 sum p[y=1] max(0, m - D)^2 / n_c``, summed over channels too and
    divided by the channel count; ``n_u = sum (1-p)[y=0] + 1e-4``, ``n_c = sum p[y=1] + 1e-4`` (over pixels).

    Args:
        feat_diff: ``(N, C, h, w)`` absolute feature difference.
        change_prob: ``(N, 1, h, w)`` change probability (not detached, as released).
        margin: ``m``.
    """
    y = torch.round(change_prob)
    wu = (1 - change_prob) * (y == 0)
    wc = change_prob * (y == 1)
    n_u, n_c = wu.sum() + 1e-4, wc.sum() + 1e-4
    sq = feat_diff.pow(2).sum(1, keepdim=True)
    hinge = torch.clamp(margin - feat_diff, min=0.0).pow(2).sum(1, keepdim=True)
    loss = 0.5 * (wu * sq).sum() / n_u + 0.5 * (wc * hinge).sum() / n_c
    return loss / feat_diff.shape[1]
