"""The protocol record written with every DG result: how each target was scored (evaluation
size, whole image or windows, TTA, label resolution, classes, mIoU convention) and what was
scored (config hash, weight files with their sha256, the weights in memory, rein_d2's version
and git revision, seed). Two results are comparable when their records agree on everything
but the per-run fields (RUN_FIELDS)."""
import functools
import hashlib
import os
import subprocess
from importlib import metadata
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.data import MetadataCatalog

from ..modeling.test_time_augmentation import SemanticSegmentorWithTTA
from .miou import CLASS_SUBSETS, subset_record

__all__ = ["RUN_FIELDS", "eval_size_of", "file_sha256", "model_sha256", "run_record",
           "target_record"]

# Fields of a record that differ between runs of one setting (the seed, the weights trained
# with it, the code revision, the full config hash, which holds the seed and output folder).
RUN_FIELDS = ("seed", "config_sha256", "weight_files", "model_sha256", "rein_d2")
# Config keys left out of setting_sha256: they change where a run reads and writes, or its
# seed, not the setting (the weights themselves are fingerprinted apart).
_PER_RUN_KEYS = ("SEED", "OUTPUT_DIR", "MODEL.WEIGHTS", "MODEL.TRAINED_WEIGHTS", "MODEL.DEVICE",
                 "DATALOADER.NUM_WORKERS", "DATASETS.TEST")


def eval_size_of(cfg, name: str, default=None):
    """(size, where it comes from) of a target: TEST.EVAL_SIZE when set (this run's override),
    else the dataset's registered eval_size, else ``default`` (None: the image as is)."""
    if cfg.TEST.EVAL_SIZE:
        return tuple(cfg.TEST.EVAL_SIZE), "TEST.EVAL_SIZE"
    registered = MetadataCatalog.get(name).get("eval_size", None)
    if registered:
        return tuple(registered), "registered"
    return (tuple(default), "INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST") if default else (None, "registered")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in a process."""
    st = os.stat(path)
    return _file_sha256(os.path.abspath(path), st.st_size, st.st_mtime)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The segmentor inside a TTA wrapper and / or DDP."""
    if isinstance(model, SemanticSegmentorWithTTA):
        model = model.model
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def model_sha256(model: torch.nn.Module) -> str:
    """sha256 of the weights evaluated (every state-dict tensor, by name, in name order): the
    fingerprint of an in-memory model, e.g. one evaluated during training."""
    model = _unwrap(model)
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        if torch.is_tensor(value):
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())  # no copy
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def code_version(here: str = os.path.dirname(os.path.abspath(__file__))) -> Dict[str, str]:
    """rein_d2's version and, where ``here`` (rein_d2's code) is in a git checkout, its
    revision, + "-dirty" with uncommitted changes to tracked files."""
    try:
        version = metadata.version("rein_d2")
    except metadata.PackageNotFoundError:
        version = "unknown (no package metadata: not pip-installed)"
    try:
        git = functools.partial(subprocess.run, capture_output=True, text=True, timeout=10, cwd=here)
        rev = git(["git", "rev-parse", "HEAD"])
        if rev.returncode:
            raise OSError(rev.stderr)
        dirty = git(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
        revision = rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        revision = "not a git checkout"
    return {"version": version, "git_revision": revision}


def _config_sha256(cfg, drop: Sequence[str] = ()) -> str:
    cfg = cfg.clone()
    cfg.defrost()
    for key in drop:
        *parents, leaf = key.split(".")
        node = functools.reduce(getattr, parents, cfg)
        node.pop(leaf, None)
    return _sha256(cfg.dump().encode())


def inference_record(cfg, model) -> Dict:
    """Whole image or windows (crop, stride as (h, w)), as the model runs them; and TTA."""
    inner = _unwrap(model)
    mode = getattr(inner, "test_mode", cfg.MODEL.MASK2FORMER.TEST.MODE)
    out = {"mode": mode}
    if mode == "slide":
        out.update(crop=list(getattr(inner, "crop_size", cfg.MODEL.MASK2FORMER.TEST.CROP_SIZE)),
                   stride=list(getattr(inner, "stride", cfg.MODEL.MASK2FORMER.TEST.STRIDE)))
    if isinstance(model, SemanticSegmentorWithTTA):
        aug = model.cfg.TEST.AUG
        out["tta"] = {"min_sizes": list(aug.MIN_SIZES), "max_size": aug.MAX_SIZE, "flip": bool(aug.FLIP)}
    else:
        out["tta"] = None
    return out


def target_record(cfg, name: str, eval_size, size_source: str, inference: Dict, classes: List[str],
                  scored: str) -> Dict:
    """How one target was scored. ``scored``: by which evaluator kind (sem_seg, a panoptic or
    instance evaluator_type)."""
    subsets = [column for column, _ in (CLASS_SUBSETS[s] for s in cfg.TEST.CLASS_SUBSETS)]
    return {
        "evaluation_size": list(eval_size) if eval_size else "native",
        "evaluation_size_from": size_source,
        **inference,
        "label_resolution": MetadataCatalog.get(name).get("label_resolution", "as stored"),
        "class_set": f"{len(classes)} classes" + "".join(f", {c}" for c in subsets),
        "miou_convention": cfg.TEST.MIOU_CONVENTION,
        "scored_as": scored,
    }


def run_record(cfg, model, classes: List[str], weight_files: Optional[Sequence[str]] = None) -> Dict:
    """What was scored, and the settings common to every target of the run."""
    if weight_files is None:
        weight_files = [f for f in (cfg.MODEL.WEIGHTS, cfg.MODEL.TRAINED_WEIGHTS) if f]
    files = [{"path": f, "sha256": file_sha256(f) if os.path.isfile(f) else "missing"}
             for f in weight_files]
    return {
        "classes": list(classes),
        "miou_convention": cfg.TEST.MIOU_CONVENTION,
        "class_subsets": subset_record(cfg.TEST.CLASS_SUBSETS),
        "seed": cfg.SEED,
        "setting_sha256": _config_sha256(cfg, _PER_RUN_KEYS),
        "config_sha256": _config_sha256(cfg),
        "weight_files": files,
        "model_sha256": model_sha256(model),
        "rein_d2": code_version(),
    }
