"""Resume checks: a training checkpoint records the config of its run, and resuming with a
config that changes the model or the optimisation is refused, naming the keys that differ."""
from typing import Dict, List, Tuple

from detectron2.config import CfgNode

from ..utils.cli import UserError

__all__ = ["config_differences", "check_resume_config"]

# Keys a resumed run may change: where things are written or read from, how long and how often
# to save, evaluate and log, and the safety nets. Anything else changes what is trained.
_MAY_CHANGE = ("OUTPUT_DIR", "MODEL.WEIGHTS", "MODEL.TRAINED_WEIGHTS", "MODEL.DEVICE",
               "DATALOADER.NUM_WORKERS", "SOLVER.MAX_ITER", "SOLVER.CHECKPOINT_PERIOD",
               "SOLVER.MAX_CHECKPOINTS", "SOLVER.LOSS_SPIKE_FACTOR", "SOLVER.LOSS_SPIKE_WINDOW",
               "SOLVER.CLIP_GRADIENTS", "TEST", "DATASETS.TEST", "VIS_PERIOD", "CUDNN_BENCHMARK")


def _flatten(node, prefix="") -> Dict[str, object]:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def config_differences(saved_yaml: str, current_yaml: str) -> List[Tuple[str, object, object]]:
    """(key, value in the checkpoint's run, value now) for every key that differs and that a
    resumed run may not change."""
    saved = _flatten(CfgNode.load_cfg(saved_yaml))
    now = _flatten(CfgNode.load_cfg(current_yaml))
    keys = sorted(set(saved) | set(now))
    return [(k, saved.get(k, "<absent>"), now.get(k, "<absent>")) for k in keys
            if saved.get(k) != now.get(k)
            and not any(k == m or k.startswith(m + ".") for m in _MAY_CHANGE)]


def check_resume_config(saved_yaml: str, current_yaml: str, path: str) -> None:
    """Refuse resuming from ``path`` (trained with ``saved_yaml``) under another config."""
    diffs = config_differences(saved_yaml, current_yaml)
    if diffs:
        shown = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in diffs[:6])
        more = f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""
        raise UserError(
            f"--resume: {path} was trained with another config ({shown}{more}); resume with the "
            "config of that run (OUTPUT_DIR/config.yaml) or start in a new OUTPUT_DIR")
