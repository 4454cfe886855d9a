"""The reference's optimiser and schedule (docs/method.md section 5): AdamW with no weight decay on
norms, level / query embeddings, Rein tokens and Rein scale; a backbone learning-rate
multiplier for full fine-tuning; poly decay to 0 with optional warm-up."""
from typing import Dict, List

import torch
from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from ..modeling.backbone.peft import lora_parameter_names

__all__ = ["param_groups", "build_optimizer", "build_lr_scheduler"]

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


def build_lr_scheduler(cfg, optimizer):
    """Poly decay lr * (1 - it / MAX_ITER) ** POLY_LR_POWER to 0 (WarmupPolyLR), after
    SOLVER.WARMUP_ITERS of warm-up; other names go to detectron2's own builder."""
    s = cfg.SOLVER
    if s.LR_SCHEDULER_NAME != "WarmupPolyLR":
        from detectron2.solver import build_lr_scheduler as d2_build
        return d2_build(cfg, optimizer)
    sched = PolynomialDecayParamScheduler(1.0, s.POLY_LR_POWER)
    sched = WarmupParamScheduler(sched, s.WARMUP_FACTOR, min(s.WARMUP_ITERS / s.MAX_ITER, 1.0),
                                 s.WARMUP_METHOD)
    return LRMultiplier(optimizer, multiplier=sched, max_iter=s.MAX_ITER)
