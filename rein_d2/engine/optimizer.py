"""The reference's optimiser and schedule (docs/method.md section 5): AdamW with no weight decay on
norms, level / query embeddings, Rein tokens and Rein scale; a backbone learning-rate
multiplier for full fine-tuning; poly decay to 0 with optional warm-up, stepped as mmengine steps
the reference's param_scheduler list."""
from typing import Dict, List

import torch
from detectron2.solver import LRMultiplier
from detectron2.solver.build import maybe_add_gradient_clipping
from fvcore.common.param_scheduler import ParamScheduler

from ..modeling.backbone.peft import lora_parameter_names

__all__ = ["param_groups", "build_optimizer", "build_lr_scheduler", "ReferencePolySchedule"]

_NORM_TYPES = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)


def param_groups(model: torch.nn.Module, base_lr: float, weight_decay: float,
                 no_decay_keys: List[str], backbone_multiplier: float) -> List[Dict]:
    """One group per trainable parameter (like mmengine's paramwise config): weight decay 0 for
    parameters of norm layers and those whose name contains one of ``no_decay_keys``; lr
    times ``backbone_multiplier`` for the VFM's own weights (``backbone.vit.*``, trainable only
    in full fine-tuning). LoRA factors live inside the VFM but are new weights: full lr."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORM_TYPES)
                   for p in m.parameters(recurse=False)}
    lora = lora_parameter_names(model)
    groups = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = id(p) in norm_params or any(k in name for k in no_decay_keys)
        vfm_own = name.startswith("backbone.vit.") and name not in lora
        lr = base_lr * (backbone_multiplier if vfm_own else 1.0)
        groups.append({"params": [p], "lr": lr, "weight_decay": 0.0 if no_decay else weight_decay,
                       "name": name})
    if not groups:
        raise ValueError("the model has no trainable parameter (is everything frozen?)")
    return groups


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    s = cfg.SOLVER
    if s.OPTIMIZER.upper() != "ADAMW":
        raise ValueError(f"SOLVER.OPTIMIZER {s.OPTIMIZER!r} is not supported: use ADAMW")
    groups = param_groups(model, s.BASE_LR, s.WEIGHT_DECAY, list(s.NO_DECAY_KEYS),
                          s.BACKBONE_MULTIPLIER)
    # detectron2's SOLVER.CLIP_GRADIENTS wraps the optimiser's step.
    optim = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
    return optim(groups, lr=s.BASE_LR, betas=tuple(s.BETAS), eps=s.EPS, weight_decay=s.WEIGHT_DECAY)


class ReferencePolySchedule(ParamScheduler):
    """The lr factor of each iteration under the reference's mmengine schedulers: warm-up over
    iterations 0 .. ``warmup_iters`` - 1 (``"linear"``: LinearLR from ``warmup_factor`` to 1;
    ``"constant"``: ConstantLR at ``warmup_factor``), then PolyLR (eta_min 0) from 1 at
    iteration ``warmup_iters`` to 0 at the last one, ``max_iter`` - 1.

    An mmengine scheduler with ``begin``/``end`` steps ``end - begin - 1`` times, so its last
    value falls on iteration ``end`` - 1: the reference's PolyLR(begin=0, end=40000) gives
    (1 - it / 39999) ** 0.9, and with its 10k warm-up the decay starts from 1 at 10000,
    where detectron2's WarmupPolyLR would be at (1 - 10000 / 40000) ** 0.9 = 0.77."""

    def __init__(self, max_iter: int, power: float, warmup_iters: int = 0,
                 warmup_factor: float = 1.0, warmup_method: str = "linear"):
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD {warmup_method!r} is not supported with "
                             f"WarmupPolyLR: use 'linear' or 'constant'")
        self.max_iter, self.power = int(max_iter), float(power)
        self.warmup_iters = min(int(warmup_iters), self.max_iter)
        self.warmup_factor, self.warmup_method = float(warmup_factor), warmup_method

    def at(self, it: int) -> float:
        w, f = self.warmup_iters, self.warmup_factor
        if it < w:
            steps = w - 1  # mmengine's total_iters: the warm-up reaches 1 on its last iteration
            if self.warmup_method == "linear":
                return f + (1.0 - f) * it / steps if steps > 0 else f
            return f if it < steps else 1.0  # ConstantLR restores the lr on its last step
        steps = self.max_iter - w - 1
        return max(1.0 - (it - w) / steps, 0.0) ** self.power if steps > 0 else 1.0

    def __call__(self, where: float) -> float:
        return self.at(round(where * self.max_iter))  # LRMultiplier passes iteration / max_iter


def build_lr_scheduler(cfg, optimizer):
    """WarmupPolyLR: :class:`ReferencePolySchedule` (SOLVER.WARMUP_* warm-up, then poly decay of
    power POLY_LR_POWER to 0 on the last iteration); other names go to detectron2's builder."""
    s = cfg.SOLVER
    if s.LR_SCHEDULER_NAME != "WarmupPolyLR":
        from detectron2.solver import build_lr_scheduler as d2_build
        return d2_build(cfg, optimizer)
    sched = ReferencePolySchedule(s.MAX_ITER, s.POLY_LR_POWER, s.WARMUP_ITERS, s.WARMUP_FACTOR,
                                  s.WARMUP_METHOD)
    return LRMultiplier(optimizer, multiplier=sched, max_iter=s.MAX_ITER)
