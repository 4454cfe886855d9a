"""rein_d2's config keys, added to a detectron2 config by :func:`add_rein_config`."""
import functools
import os
import re

import torch
import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .utils.cli import UserError
from .utils.cpu import warn_if_slow_bfloat16
from .utils.projects import import_project_of

LOSS_SPIKE_MIN_HISTORY = 5  # losses the guard needs before it compares (engine.hooks)

__all__ = ["add_rein_config", "check_config", "check_training_config", "load_config", "merge_overrides",
           "SafeCfgNode"]


class _BaseRefused(UserError):
    """A _BASE_ that cannot be read; the file naming it adds itself to the message."""

    def __init__(self, base: str, reason: str):
        super().__init__(f"_BASE_ {base}: {reason}")
        self.base, self.reason = base, reason


class SafeCfgNode(CN):
    """detectron2's CfgNode, reading config files and their ``_BASE_`` files as plain YAML only.

    detectron2 falls back to ``yaml.unsafe_load`` (``merge_from_file``'s ``allow_unsafe=True``),
    which runs a ``!!python/...`` tag's code, and opens a ``_BASE_`` URL by downloading it. Here
    a tag is refused, naming the file and line, and a ``_BASE_`` must be a local file."""

    @classmethod
    def _open_cfg(cls, filename):
        return open(filename, "r", encoding="utf-8")

    @classmethod
    def load_yaml_with_base(cls, filename, allow_unsafe=False):
        if "://" in filename:
            raise _BaseRefused(filename, "a URL; rein_d2 downloads no config: download it and "
                                         "name the local file")
        if not os.path.isfile(filename):
            raise _BaseRefused(filename, "no such file (a relative _BASE_ starts from the folder "
                                         "of the file naming it)")
        try:
            return super().load_yaml_with_base(filename, allow_unsafe=False)
        except _BaseRefused as e:  # raised by one of this file's bases
            raise UserError(f"{filename}: _BASE_ {e.base}: {e.reason}") from None
        except yaml.constructor.ConstructorError as e:
            tag = re.search(r"tag '([^']*)'", str(e.problem))
            tag = tag.group(1).replace("tag:yaml.org,2002:", "!!") if tag else "a tag"
            raise UserError(f"{filename}: refused, line {e.problem_mark.line + 1} has the YAML "
                            f"tag {tag}, which would run code; rein_d2 reads configs as plain "
                            "YAML (numbers, strings, lists, mappings): remove the tag") from None
        except yaml.YAMLError as e:
            where = f"line {e.problem_mark.line + 1}: " if getattr(e, "problem_mark", None) else ""
            raise UserError(f"{filename}: not valid YAML ({where}{getattr(e, 'problem', e)}); "
                            "fix the file") from None


def _checked_overrides(opts) -> list:
    opts = list(opts)
    flags = [o for o in opts if isinstance(o, str) and o.startswith("--")]
    if flags:
        raise UserError(f"{flags[0]} stands among the KEY VALUE config overrides: put the tool's "
                        "flags before the overrides (e.g. --resume SOLVER.MAX_ITER 100)")
    if len(opts) % 2:
        raise UserError(f"config overrides come in KEY VALUE pairs; got {len(opts)} items: "
                        f"{' '.join(map(str, opts))}")
    return opts


def merge_overrides(cfg: CN, opts) -> None:
    """``opts`` (KEY, VALUE, ...) merged into ``cfg`` (not frozen), then the whole config
    checked: a bad key or value is one UserError."""
    try:
        cfg.merge_from_list(_checked_overrides(opts))
    except (KeyError, ValueError, AssertionError) as e:
        raise UserError(f"config override: {e}") from None
    check_config(cfg)


def load_config(config_file: str, opts=(), add_config=()) -> CN:
    """detectron2's defaults plus rein_d2's keys (and those of each ``add_config`` function, as
    a project's ``add_<x>_config``), then ``config_file`` (plain YAML only: :class:`SafeCfgNode`)
    and ``opts`` (KEY, VALUE, ...). A config under ``projects/<Name>/`` first imports that
    project's packages, which register its datasets, and adds their keys.
    Without CUDA, MODEL.DEVICE defaults to "cpu" (an explicit MODEL.DEVICE in opts wins)."""
    opts = _checked_overrides(opts)
    if not os.path.isfile(config_file):
        raise UserError(f"--config-file {config_file}: no such file (the configs are under configs/)")
    cfg = add_rein_config(get_cfg())
    # a projects/<Name>/ config: that project's packages registered, its keys added (once)
    for add in dict.fromkeys([*add_config, *import_project_of(config_file)]):
        add(cfg)
    cfg = SafeCfgNode(cfg)  # every node: yacs merges only nodes of the same class
    try:  # a typo or a wrong type in the file (or a _BASE_ it names): one line, not a traceback
        cfg.merge_from_file(config_file)
    except (KeyError, ValueError, AssertionError, yaml.YAMLError) as e:
        if isinstance(e, UserError):
            raise
        why = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
        raise UserError(f"--config-file {config_file}: {why} (in it or in a _BASE_ file it names): "
                        "fix that key or its value (the keys are listed in docs/CONFIGS.md)") from None
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    merge_overrides(cfg, opts)
    from .data.datasets.custom import check_num_classes, register_descriptions

    register_descriptions(cfg.DATASETS.DESCRIPTIONS, config_file)  # a user's own datasets
    check_num_classes(cfg)
    warn_if_slow_bfloat16(cfg)  # once, at the start of any tool
    return cfg


# Keys with a fixed set of values: a typo is named at load time, not deep inside a run.
_CHOICES = {"SOLVER.AMP.PRECISION": ("float16", "bfloat16"),
            "MODEL.VIT.NECK": ("resize", "deconv"),
            "MODEL.MASK2FORMER.TEST.MODE": ("whole", "slide"),
            "MODEL.MASK2FORMER.TEST.AUTOCAST": ("", "bfloat16", "float16"),
            "MODEL.COMPILE": ("", "default", "reduce-overhead", "max-autotune"),
            "TEST.MIOU_CONVENTION": ("detectron2", "mmseg")}


def _value(cfg: CN, key: str):
    return functools.reduce(getattr, key.split("."), cfg)


def _positive(cfg: CN, *keys: str) -> None:
    for key in keys:
        value = _value(cfg, key)
        if any(v <= 0 for v in (value if isinstance(value, (list, tuple)) else [value])):
            raise UserError(f"{key} is {value!r}; it must be positive")


def check_config(cfg: CN) -> None:
    """Refuse values outside the choices rein_d2 knows, naming the key and the choices, and
    sliding-window sizes that are not positive."""
    for key, choices in _CHOICES.items():
        value = _value(cfg, key)
        if value not in choices:
            raise UserError(f"{key} is {value!r}; expected one of {', '.join(choices)}")
    from .evaluation.miou import CLASS_SUBSETS  # here: rein_d2 imports config before evaluation

    unknown = [s for s in cfg.TEST.CLASS_SUBSETS if s not in CLASS_SUBSETS]
    if unknown:
        raise UserError(f"TEST.CLASS_SUBSETS holds {unknown[0]!r}; expected some of "
                        f"{', '.join(CLASS_SUBSETS)}")
    size = tuple(cfg.TEST.EVAL_SIZE)
    if size and (len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)):
        raise UserError(f"TEST.EVAL_SIZE is {size!r}; expected () or (W, H), two positive "
                        "integers, e.g. TEST.EVAL_SIZE \"(2048, 1024)\"")
    _positive(cfg, "MODEL.MASK2FORMER.TEST.CROP_SIZE", "MODEL.MASK2FORMER.TEST.STRIDE",
              "MODEL.MASK2FORMER.TEST.CROP_BATCH_SIZE")


def check_training_config(cfg: CN) -> None:
    """Refuse, before anything is built, training values that would fail deep inside a run or
    make it do nothing with exit status 0."""
    _positive(cfg, "SOLVER.MAX_ITER", "SOLVER.IMS_PER_BATCH", "SOLVER.CHECKPOINT_PERIOD")
    if cfg.INPUT.CROP.ENABLED:
        _positive(cfg, "INPUT.CROP.SIZE")
    if cfg.SOLVER.LOSS_SPIKE_FACTOR > 0 and cfg.SOLVER.LOSS_SPIKE_WINDOW < LOSS_SPIKE_MIN_HISTORY:
        raise UserError(f"SOLVER.LOSS_SPIKE_WINDOW is {cfg.SOLVER.LOSS_SPIKE_WINDOW}; the loss-spike "
                        f"guard compares with the median of at least {LOSS_SPIKE_MIN_HISTORY} "
                        "iterations: set it to that or more, or turn the guard off with "
                        "SOLVER.LOSS_SPIKE_FACTOR 0")


def add_rein_config(cfg: CN) -> CN:
    """Add the keys of the Rein backbones and head to ``cfg`` (in place) and return it."""
    cfg.MODEL.VIT = CN()
    # VFM size: small / base / large / giant (DINOv2), small / small_plus / base / large /
    # huge_plus / 7b (DINOv3), base / large / huge (SAM), large (others).
    cfg.MODEL.VIT.SIZE = "large"
    # ReinTimmViT: the timm model name of any VisionTransformer / Eva style ViT to refine.
    cfg.MODEL.VIT.TIMM_NAME = ""
    # DINOv2 register tokens: 0 (original models) or 4 (the "with registers" models).
    cfg.MODEL.VIT.NUM_REGISTERS = 0
    # Custom sizes (0 = as MODEL.VIT.SIZE): width, number of blocks and of attention heads.
    cfg.MODEL.VIT.EMBED_DIM = 0
    cfg.MODEL.VIT.DEPTH = 0
    cfg.MODEL.VIT.NUM_HEADS = 0
    # Patch size the model runs at; official 14x14 kernels are resized offline to it.
    cfg.MODEL.VIT.PATCH_SIZE = 16
    # Image size the stored position table is laid out for (grid = IMG_SIZE / PATCH_SIZE).
    cfg.MODEL.VIT.IMG_SIZE = 512
    # Blocks whose outputs become res2..res5; empty = the spec's default for the depth.
    cfg.MODEL.VIT.OUT_INDICES = []
    # Freeze the VFM and keep it in eval mode; False = full fine-tuning baseline.
    cfg.MODEL.VIT.FREEZE = True
    # Multi-scale neck: "resize" (bilinear x4/x2/x1/x0.5) or "deconv" (learned, CLIP variant).
    cfg.MODEL.VIT.NECK = "resize"
    # LoRA baseline: rank of a trainable low-rank update of every block's qkv; 0 = off.
    cfg.MODEL.VIT.LORA_RANK = 0
    # LoRA scale numerator (an int): the update is scaled by LORA_ALPHA / LORA_RANK.
    cfg.MODEL.VIT.LORA_ALPHA = 16
    # VPT-deep baseline: learnable prompt tokens per block (DINOv2, CLIP, MAE); 0 = off.
    cfg.MODEL.VIT.VPT_TOKENS = 0
    # Blocks (the first N; -1 = all) recomputed with their Rein refinement in the backward
    # pass instead of storing activations: less memory, more time; 0 = none.
    cfg.MODEL.VIT.CHECKPOINT_BLOCKS = 0

    cfg.MODEL.CNN = CN()  # ReinResNet / ReinConvNeXt (MODEL.VIT.FREEZE freezes them too)
    # CNN size: "r50" / "r101" (ResNet-50/101, deep V1c stem), "large" (ConvNeXt-L).
    cfg.MODEL.CNN.SIZE = "r50"
    # Blocks per stage, overriding the size's (small test models); empty = the size's.
    cfg.MODEL.CNN.DEPTHS = []

    cfg.MODEL.REIN = CN()
    # Refine the frozen VFM with Rein; False = plain frozen backbone.
    cfg.MODEL.REIN.ENABLED = True
    # Tokens per layer (m); must equal the number of queries when linked to them.
    cfg.MODEL.REIN.TOKEN_LENGTH = 100
    # Rank of the token factorisation T = A @ B; 0 = full tokens (no LoRA).
    cfg.MODEL.REIN.LORA_DIM = 16
    # Make the decoder's object queries from the tokens ("link token to query").
    cfg.MODEL.REIN.LINK_TOKEN_TO_QUERY = True
    # Width of the linked queries (the decoder's hidden dimension).
    cfg.MODEL.REIN.QUERY_DIM = 256
    # Softmax over tokens of the scaled feature-token similarity.
    cfg.MODEL.REIN.USE_SOFTMAX = True
    # Initial value of the learnable scale of the refinement.
    cfg.MODEL.REIN.SCALE_INIT = 0.001
    # Zero-initialise mlp_delta_f and fix the scale to 1 (refinement starts as a no-op).
    cfg.MODEL.REIN.ZERO_MLP_DELTA_F = False

    cfg.MODEL.MASK2FORMER = CN()
    # Decoder width D (queries, pixel decoder, mask features).
    cfg.MODEL.MASK2FORMER.HIDDEN_DIM = 256
    # Number of object queries; equals MODEL.REIN.TOKEN_LENGTH with linked queries.
    cfg.MODEL.MASK2FORMER.NUM_QUERIES = 100
    # Attention heads of the pixel decoder and the query decoder.
    cfg.MODEL.MASK2FORMER.NHEADS = 8
    # Masked-attention decoder layers and their FFN width.
    cfg.MODEL.MASK2FORMER.DEC_LAYERS = 9
    cfg.MODEL.MASK2FORMER.DIM_FEEDFORWARD = 2048
    # Deformable-attention encoder layers, their FFN width and sampling points per level/head.
    cfg.MODEL.MASK2FORMER.ENC_LAYERS = 6
    cfg.MODEL.MASK2FORMER.ENC_DIM_FEEDFORWARD = 1024
    cfg.MODEL.MASK2FORMER.ENC_POINTS = 4
    # Sample the encoder's deformable attention again in backward instead of keeping the samples
    # (the pixel decoder's largest activations), as the CUDA kernel does: less training memory
    # for a little more time (docs/benchmarks/cpu_profile.md).
    cfg.MODEL.MASK2FORMER.ENC_RECOMPUTE_SAMPLING = True
    # Loss weights (also the Hungarian matching costs) and the no-object class weight.
    cfg.MODEL.MASK2FORMER.CLASS_WEIGHT = 2.0
    cfg.MODEL.MASK2FORMER.MASK_WEIGHT = 5.0
    cfg.MODEL.MASK2FORMER.DICE_WEIGHT = 5.0
    cfg.MODEL.MASK2FORMER.NO_OBJECT_WEIGHT = 0.1
    # Points sampled per mask for matching and for the mask losses, and how they are chosen.
    cfg.MODEL.MASK2FORMER.TRAIN_NUM_POINTS = 12544
    cfg.MODEL.MASK2FORMER.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.MASK2FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75

    cfg.MODEL.MASK2FORMER.TEST = CN()
    # Which outputs inference returns ("sem_seg", "instances", "panoptic_seg").
    cfg.MODEL.MASK2FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK2FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK2FORMER.TEST.PANOPTIC_ON = False
    # Panoptic: queries below this class score are dropped; a segment keeping less than this
    # fraction of its mask after overlaps are resolved is dropped.
    cfg.MODEL.MASK2FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.8
    cfg.MODEL.MASK2FORMER.TEST.OVERLAP_THRESHOLD = 0.8
    # Instance: number of (query, class) pairs kept per image.
    cfg.MODEL.MASK2FORMER.TEST.DETECTIONS_PER_IMAGE = 100
    # Semantic inference over the whole padded image ("whole") or in sliding windows ("slide").
    cfg.MODEL.MASK2FORMER.TEST.MODE = "whole"
    # Sliding-window crop (h, w) and stride (h, w); the spec's 512 models use 512 / 341.
    cfg.MODEL.MASK2FORMER.TEST.CROP_SIZE = (512, 512)
    cfg.MODEL.MASK2FORMER.TEST.STRIDE = (341, 341)
    # Windows run through the model at once (bounds memory on large images).
    cfg.MODEL.MASK2FORMER.TEST.CROP_BATCH_SIZE = 8
    # Inference network under autocast: "" (float32, the reference's numbers), "bfloat16" (CPU
    # or CUDA) or "float16" (CUDA); class and mask logits return to float32 before post-processing.
    cfg.MODEL.MASK2FORMER.TEST.AUTOCAST = ""
    # Evaluation protocol, recorded in every dg_summary.json (docs/EVALUATION.md). (W, H) limits,
    # aspect kept, replacing every target's registered evaluation size in this run; () = its own.
    cfg.TEST.EVAL_SIZE = ()
    # A class absent from a target's labels: "detectron2" leaves it out of mIoU; "mmseg" (the
    # reference's) counts it as IoU 0 where it is predicted.
    cfg.TEST.MIOU_CONVENTION = "detectron2"
    # Class subsets reported beside mIoU: "synthia16" (mIoU16), "synthia13" (mIoU13).
    cfg.TEST.CLASS_SUBSETS = []
    # torch.compile mode of the backbone, pixel decoder and query decoder ("" = eager; "default",
    # "reduce-overhead", "max-autotune"): same weights and keys; measured in the README.
    cfg.MODEL.COMPILE = ""

    # Semantic training augmentation (docs/method.md section 5); the short-side choices, crop and
    # flip use detectron2's INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN / CROP / RANDOM_FLIP keys.
    # Largest fraction of a crop one class may take (retried up to 10 times); 1.0 = off.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    # Photometric distortion (brightness, contrast, saturation, hue) as the reference applies it.
    cfg.INPUT.COLOR_AUG_SSD = True
    # Dataset mapper: "semantic", "instance" (COCO instances) or "panoptic" (COCO panoptic).
    cfg.INPUT.DATASET_MAPPER_NAME = "semantic"
    # Description files (YAML / JSON) of a user's own datasets, registered as <name>_<split>
    # by load_config (docs/CUSTOM_DATA.md); relative: to the current folder, else the config's.
    cfg.DATASETS.DESCRIPTIONS = []

    # Training (docs/method.md section 5). Optimiser: AdamW with these betas and eps.
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    cfg.SOLVER.EPS = 1e-8
    # Parameters whose name holds one of these (and all norm layers) get no weight decay.
    cfg.SOLVER.NO_DECAY_KEYS = ["norm", "level_embed", "query_embed", "learnable_tokens", "rein.scale"]
    # Learning-rate factor of the VFM's own weights (full fine-tuning only).
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Exponent of WarmupPolyLR, stepped as the reference's mmengine PolyLR: without warm-up
    # lr * (1 - iter / (MAX_ITER - 1)) ** power, 0 on the last iteration; with WARMUP_ITERS = W
    # the decay runs from iteration W to MAX_ITER - 1 (rein_d2/engine/optimizer.py).
    cfg.SOLVER.POLY_LR_POWER = 0.9
    # AMP precision with SOLVER.AMP.ENABLED: "float16" (with loss scaling) or "bfloat16".
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Checkpoints without the frozen VFM (it comes from MODEL.WEIGHTS when loading).
    cfg.SOLVER.LIGHT_CHECKPOINTS = True
    # A light checkpoint of trained weights, loaded on top of MODEL.WEIGHTS (eval, demo).
    cfg.MODEL.TRAINED_WEIGHTS = ""
    # Run on random weights where no file gives them (tests, the offline quick start); False:
    # every VFM weight, and for inference every weight, must come from a file.
    cfg.MODEL.ALLOW_RANDOM_WEIGHTS = False
    # Keep only the newest N periodic checkpoints (0 = keep all; model_final is always kept).
    cfg.SOLVER.MAX_CHECKPOINTS = 0
    # Stop when the loss exceeds this many times the median of the last LOSS_SPIKE_WINDOW
    # (>= 5) iterations (FACTOR 0 = off), before a checkpoint can store the diverged weights.
    cfg.SOLVER.LOSS_SPIKE_FACTOR = 10.0
    cfg.SOLVER.LOSS_SPIKE_WINDOW = 50
    return cfg
