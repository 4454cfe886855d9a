"""Mask2Former's training losses: Hungarian matching on sampled points, class cross-entropy
with a down-weighted no-object class, and point-sampled mask BCE and Dice, for every
prediction (deep supervision). Defaults are docs/method.md section 4's.
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

__all__ = ["point_sample", "uncertain_point_coords", "HungarianMatcher", "SetCriterion"]


def point_sample(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """masks [N, H, W], coords [N, P, 2] in [0, 1] (x, y) -> [N, P], bilinear, zero outside."""
    out = F.grid_sample(masks.unsqueeze(1), 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False)
    return out[:, 0, :, 0]


def uncertain_point_coords(mask_logits: torch.Tensor, num_points: int, oversample: float,
                           importance: float) -> torch.Tensor:
    """Points where the logits are closest to 0 (PointRend's importance sampling) plus
    uniformly random ones: [N, num_points, 2]."""
    n = mask_logits.shape[0]
    candidates = torch.rand((n, int(num_points * oversample), 2), device=mask_logits.device)
    uncertainty = -point_sample(mask_logits, candidates).abs()
    k = int(importance * num_points)
    idx = uncertainty.topk(k, dim=1).indices
    picked = torch.gather(candidates, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    if num_points - k > 0:
        picked = torch.cat([picked, torch.rand((n, num_points - k, 2), device=mask_logits.device)], 1)
    return picked


def _bce_cost(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ gt.t() + neg @ (1 - gt).t()) / pred.shape[1]


def _dice_cost(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    pred = pred.sigmoid()
    num = 2 * pred @ gt.t()
    den = pred.sum(-1)[:, None] + gt.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to ground-truth masks minimising
    cost_class * -p(class) + cost_mask * BCE + cost_dice * Dice on shared sampled points."""

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 12544):
        super().__init__()
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def match_one(self, cls_logits, mask_logits, labels, masks, coords):
        """cls [Q, K+1], masks [Q, h, w]; labels [G], gt masks [G, H, W]; coords [P, 2].
        Returns (query indices, gt indices)."""
        q, g = cls_logits.shape[0], labels.shape[0]
        pred = point_sample(mask_logits.float(), coords[None].expand(q, -1, -1))
        gt = point_sample(masks.float(), coords[None].expand(g, -1, -1))
        cost = (-self.cost_class * cls_logits.float().softmax(-1)[:, labels]
                + self.cost_mask * _bce_cost(pred, gt) + self.cost_dice * _dice_cost(pred, gt))
        if not torch.isfinite(cost).all():  # scipy would fail with an unhelpful message
            raise FloatingPointError("non-finite class or mask logits reached the Hungarian "
                                     "matcher: the model diverged (lower the learning rate, "
                                     "enable gradient clipping or check the inputs)")
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        dev = cls_logits.device
        return torch.as_tensor(rows, dtype=torch.long, device=dev), torch.as_tensor(cols, dtype=torch.long, device=dev)


class SetCriterion(nn.Module):
    """Losses of every prediction (the last one as loss_*, earlier ones as d{i}.loss_*).

    Point coordinates come from ``match_points`` and ``loss_points``; a test can replace
    either to inject recorded coordinates.
    """

    def __init__(self, num_classes: int, *, class_weight: float = 2.0, mask_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object_weight: float = 0.1, num_points: int = 12544,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75,
                 matcher: Optional[HungarianMatcher] = None):
        super().__init__()
        self.num_classes = num_classes
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.num_points, self.oversample, self.importance = num_points, oversample_ratio, importance_sample_ratio
        self.matcher = matcher or HungarianMatcher(class_weight, mask_weight, dice_weight, num_points)
        empty = torch.ones(num_classes + 1)
        empty[-1] = no_object_weight
        self.register_buffer("empty_weight", empty, persistent=False)
        self.last_matches: List = []  # per prediction: per image (query idx, gt idx)

    def forward(self, cls_list: List[torch.Tensor], mask_list: List[torch.Tensor],
                targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """targets: per image {"labels": [G], "masks": [G, H, W]}."""
        losses, self.last_matches = {}, []
        n = len(cls_list)
        for i, (cls, masks) in enumerate(zip(cls_list, mask_list)):
            suffix = "" if i == n - 1 else f"d{i}."
            for k, v in self._single(cls, masks, targets).items():
                losses[suffix + k] = v
        return losses

    def match_points(self, device) -> torch.Tensor:
        """Uniform points [P, 2] shared by all queries and masks of one image for matching."""
        return torch.rand((1, self.matcher.num_points, 2), device=device)[0]

    def loss_points(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """Importance-sampled points [N, P, 2] for the matched masks' BCE and Dice."""
        return uncertain_point_coords(mask_logits, self.num_points, self.oversample, self.importance)

    def _num_masks(self, targets, device) -> torch.Tensor:
        num = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num)
            num = num / torch.distributed.get_world_size()
        return num.clamp(min=1)

    def _single(self, cls, masks, targets):
        b, q = cls.shape[:2]
        matches = []
        for j, t in enumerate(targets):
            coords = self.match_points(cls.device)
            matches.append(self.matcher.match_one(cls[j], masks[j], t["labels"], t["masks"], coords))
        self.last_matches.append(matches)

        target_classes = torch.full((b, q), self.num_classes, dtype=torch.long, device=cls.device)
        for j, (qi, gi) in enumerate(matches):
            target_classes[j, qi] = targets[j]["labels"][gi]
        ce = F.cross_entropy(cls.flatten(0, 1).float(), target_classes.flatten(),
                             weight=self.empty_weight, reduction="sum")
        loss_cls = ce / self.empty_weight[target_classes].sum() * self.class_weight

        num_masks = self._num_masks(targets, cls.device)
        pred = torch.cat([masks[j, qi] for j, (qi, _) in enumerate(matches)])
        gt = torch.cat([targets[j]["masks"][gi] for j, (_, gi) in enumerate(matches)])
        if pred.shape[0] == 0:  # no ground truth: keep the graph, contribute nothing
            zero = masks.sum() * 0.0
            return {"loss_cls": loss_cls, "loss_mask": zero, "loss_dice": zero}
        with torch.no_grad():
            coords = self.loss_points(pred.float())
            gt_points = point_sample(gt.float(), coords)
        pred_points = point_sample(pred.float(), coords)
        bce = F.binary_cross_entropy_with_logits(pred_points, gt_points, reduction="sum")
        loss_mask = bce / (num_masks * self.num_points) * self.mask_weight
        p = pred_points.sigmoid()
        dice = 1 - (2 * (p * gt_points).sum(1) + 1) / (p.sum(1) + gt_points.sum(1) + 1)
        loss_dice = dice.sum() / num_masks * self.dice_weight
        return {"loss_cls": loss_cls, "loss_mask": loss_mask, "loss_dice": loss_dice}
