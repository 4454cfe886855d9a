"""Light checkpoints: what a frozen-VFM run trains is a few million weights, so checkpoints
hold only those (plus optimiser, scheduler, iteration and RNG state); the frozen VFM comes from
MODEL.WEIGHTS at load time. Saves are atomic."""
import contextlib
import os
import random
import tempfile
from typing import Dict, Iterable, Set

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..checkpoint import CheckpointFileError, CheckpointMismatchError, detect_family, read_checkpoint
from ..checkpoint.io import require_checkpoint_file
from ..checkpoint.pretrained import _FAMILY_NAMES
from ..modeling.backbone.peft import lora_parameter_names
from ..utils.cli import UserError
from ..utils.files import os_error_of, write_bytes_atomic, write_failure
from .resume import check_resume_config

__all__ = ["CheckpointSaveError", "LightCheckpointer", "RNGState", "check_state_fits",
           "check_weight_files", "frozen_keys", "light_state_dict", "load_model_weights", "save_atomic",
           "vfm_keys"]

FROZEN_PREFIX = "backbone.vit."


def frozen_keys(model: torch.nn.Module) -> Iterable[str]:
    """State-dict keys of the frozen VFM: its parameters that do not train (and its buffers)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return [k for k in model.state_dict() if k.startswith(FROZEN_PREFIX) and k not in trainable]


def light_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The model's state dict without the frozen VFM."""
    frozen = set(frozen_keys(model))
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


class CheckpointSaveError(UserError, OSError):
    """A checkpoint could not be written (full disk, read-only folder): nothing was replaced."""


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _write_error(e: BaseException) -> bool:
    """A failed file write: an OSError, or torch.save's ``RuntimeError: [enforce fail at
    inline_container.cc ...]`` (its PyTorchStreamWriter's write failed: full disk, file-size
    limit), which carries the OSError as its context or names only a file position."""
    return os_error_of(e) is not None or (isinstance(e, RuntimeError) and (
        "inline_container" in str(e) or "PytorchStreamWriter" in str(e)))


def save_atomic(data, path: str) -> None:
    """torch.save through a temporary file of a unique name (two processes saving to one
    folder never share it), fsync and a rename: an interrupted or failed save never replaces a
    good file with a torn one, and a failed one leaves no partial file behind (on a full disk
    that file would hold the space the next save needs)."""
    tmp = None
    try:
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as e:
        if not _write_error(e):
            raise
        raise CheckpointSaveError(str(write_failure(
            path, e, _tensor_bytes(data), what="the checkpoint ",
            then="continue with --resume (any previous checkpoint is kept)"))) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


class RNGState:
    """Python, numpy and torch (CPU and CUDA) random states as a checkpointable, in tensors and
    plain numbers only, so it loads with torch.load(weights_only=True). Restoring it makes a
    resumed run draw the same augmentations and sampled points as an uninterrupted one."""

    def state_dict(self):
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {"python": [version, list(internal), gauss],
                 "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                           "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
                 "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state):
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                             n["has_gauss"], n["cached"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class LightCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose saves leave out the frozen VFM (``light=True``), are written
    atomically and record the run's config (``config``: its yaml), and whose loads run no code
    from the file (:func:`rein_d2.checkpoint.read_checkpoint`; detectron2's own would unpickle
    a ``.pkl``). A file for another model (another VFM size, an unconverted official VFM) is
    refused naming it instead of being loaded in part. Loading a light file expects the VFM to
    be in place already (from MODEL.WEIGHTS) and does not report the VFM's keys as missing."""

    def __init__(self, model, save_dir="", *, light: bool = True, config: str = None,
                 **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.light = light
        self.config = config  # yaml saved with every checkpoint, compared on resume
        self.loaded_keys = set()  # state-dict keys loaded from a file so far
        self.strict_shapes = True  # refuse any shape mismatch (False: only the VFM's)

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": light_state_dict(self.model) if self.light else self.model.state_dict(),
                "rein_d2_light": self.light}
        if self.config is not None:
            data["config"] = self.config
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info(f"Saving checkpoint to {path}")
        save_atomic(data, path)
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        try:
            write_bytes_atomic(path, last_filename_basename.encode())
        except OSError as e:
            raise CheckpointSaveError(f"{e} (it still names the previous checkpoint)") from None

    def get_checkpoint_file(self) -> str:
        """OUTPUT_DIR/last_checkpoint's file, which must be a checkpoint file of OUTPUT_DIR
        itself: a name that leads elsewhere (an absolute path, "..", a link out) is refused
        without following it or showing what the file holds."""
        tag = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with open(tag, "rb") as f:
                name = f.read(4096).decode("utf-8", "replace").strip()
        except OSError:
            return ""
        path = os.path.join(self.save_dir, name)
        folder = os.path.realpath(self.save_dir)
        if (not name or os.path.basename(name) != name or name in (".", "..")
                or os.path.dirname(os.path.realpath(path)) != folder or not os.path.isfile(path)):
            raise UserError(f"{tag} does not name a checkpoint file in OUTPUT_DIR {self.save_dir}: "
                            "write the name of one of its model_*.pth files into it, or delete it "
                            "to start anew")
        return path

    def load(self, path, checkpointables=None):
        if path:
            require_checkpoint_file(path)
        self._file = path
        return super().load(path, checkpointables)

    def _load_file(self, filename: str):
        data = read_checkpoint(filename)
        if filename.endswith(".pkl"):
            data = _model_zoo_layout(data, filename)
        if not isinstance(data, dict):
            raise CheckpointFileError(f"{filename}: holds a {type(data).__name__}, not a state "
                                      "dict or a checkpoint")
        if "model" not in data:
            data = {"model": data}
        if self.config is not None and isinstance(data.get("config"), str):
            check_resume_config(data["config"], self.config, filename)  # before any tensor error
        self._loading_light = bool(data.get("rein_d2_light", False))
        return data

    def _load_model(self, checkpoint):
        if not checkpoint.get("matching_heuristics"):  # renamed (Caffe2) files: shapes later
            check_state_fits(checkpoint["model"], self.model, self._file, self.strict_shapes)
        incompatible = super()._load_model(checkpoint)
        # Record what came from a file, for callers that must not keep random weights.
        missing = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
        self.loaded_keys |= set(self.model.state_dict()) - missing
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        if getattr(self, "_loading_light", False):
            frozen = set(frozen_keys(self.model))
            incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k not in frozen]
        super()._log_incompatible_keys(incompatible)


def _model_zoo_layout(data, filename):
    """detectron2's reading of its model-zoo pickles: its own files as they are, Caffe2 /
    Detectron1 ones as renamed weights (their "blobs", without momentum buffers)."""
    if not isinstance(data, dict):
        return data
    if "model" in data and "__author__" in data:
        return data
    data = data.get("blobs", data)
    return {"model": {k: v for k, v in data.items() if not k.endswith("_momentum")},
            "__author__": "Caffe2", "matching_heuristics": True}


def _vit_geometry(shapes: Dict[str, tuple]) -> str:
    width = shapes.get(FROZEN_PREFIX + "patch_embed.proj.weight", ("?",))[0]
    blocks = {k.split(".")[3] for k in shapes if k.startswith(FROZEN_PREFIX + "blocks.")}
    return f"width {width}, {len(blocks)} blocks"


def check_state_fits(state: Dict, model: torch.nn.Module, path: str, strict: bool = True) -> None:
    """Refuse, naming ``path``, a state dict made for another model: an official VFM file that
    was not converted, a VFM of another size or depth, or (``strict``) any weight whose shape
    differs from the model's."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if state and not any(k in own for k in state) and not any(k.startswith("backbone.") for k in state):
        try:
            family = detect_family(state)
        except CheckpointMismatchError:
            family = None
        if family:
            raise CheckpointMismatchError(
                f"{path}: an official {_FAMILY_NAMES[family]} checkpoint that was not converted for rein_d2; run "
                f"python tools/convert_pretrained.py --config-file <your config> --input {path} "
                "--output weights/<name>.pth and set MODEL.WEIGHTS to its output")
    bad = [(k, tuple(v.shape), own[k]) for k, v in state.items()
           if k in own and hasattr(v, "shape") and tuple(v.shape) != own[k]]
    vfm_bad = [b for b in bad if b[0].startswith(FROZEN_PREFIX)]
    if vfm_bad:
        theirs = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
        k, a, b = vfm_bad[0]
        raise CheckpointMismatchError(
            f"{path}: weights for another VFM size ({_vit_geometry(theirs)} in the file, "
            f"{_vit_geometry(own)} in the model the config builds; {k}: {list(a)} vs {list(b)}); "
            "set MODEL.VIT.SIZE (or EMBED_DIM / DEPTH) to the file's, or use weights converted "
            "for this config")
    if bad and strict:
        k, a, b = bad[0]
        raise CheckpointMismatchError(
            f"{path}: a checkpoint of another model ({len(bad)} weights differ in shape; first "
            f"{k}: {list(a)} in the file, {list(b)} in the model); use the config it was trained "
            "with (its OUTPUT_DIR/config.yaml)")


def vfm_keys(model: torch.nn.Module) -> Set[str]:
    """State-dict keys of the VFM's own weights (frozen or fine-tuned), which must come from a
    file: everything under backbone.vit. except the LoRA factors added to it."""
    backbone = getattr(model, "backbone", None)
    lora = {f"backbone.{n}" for n in lora_parameter_names(backbone)} if backbone is not None else set()
    return {k for k in model.state_dict() if k.startswith(FROZEN_PREFIX) and k not in lora}


def _abbrev(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:3]) + (f", ... ({len(keys) - 3} more)" if len(keys) > 3 else "")


def check_weight_files(cfg) -> None:
    """Refuse a MODEL.WEIGHTS / MODEL.TRAINED_WEIGHTS file that does not exist, or a URL,
    before any model is built: one line naming the key and the path."""
    for key in ("WEIGHTS", "TRAINED_WEIGHTS"):
        weights = cfg.MODEL[key]
        if weights and "://" in weights:
            try:
                require_checkpoint_file(weights)  # the shared refusal: nothing is downloaded
            except UserError as e:
                raise UserError(f"MODEL.{key}: {e}") from None
        if weights and not os.path.isfile(weights):
            raise UserError(f"MODEL.{key} not found: {weights}")


def load_model_weights(cfg, model, *, inference: bool = True, resume_file: str = "") -> Set[str]:
    """MODEL.WEIGHTS (a full checkpoint, or the converted VFM), then MODEL.TRAINED_WEIGHTS (a
    light checkpoint of the trained part), then ``resume_file`` (a training checkpoint).

    Refused, naming the file and what to set: a light file as the only source, weights for
    another model, and any VFM weight that would stay random; for ``inference`` also any
    trained weight (Rein, head) that would stay at its initial value. MODEL.ALLOW_RANDOM_WEIGHTS
    lifts the last two (tests, the offline quick start). Returns the keys loaded from files."""
    checkpointer = LightCheckpointer(model)
    checkpointer.strict_shapes = inference  # training may start a new head (other classes)
    if cfg.MODEL.WEIGHTS:
        checkpointer.load(cfg.MODEL.WEIGHTS, checkpointables=[])
        if checkpointer._loading_light and frozen_keys(model):
            raise CheckpointMismatchError(
                f"{cfg.MODEL.WEIGHTS} is a light checkpoint (trained weights only, no VFM): set "
                "MODEL.WEIGHTS to the VFM weights (tools/convert_pretrained.py output) and "
                "MODEL.TRAINED_WEIGHTS to this file")
    for path in filter(None, (cfg.MODEL.TRAINED_WEIGHTS, resume_file)):
        checkpointer.load(path, checkpointables=[])
    if cfg.MODEL.ALLOW_RANDOM_WEIGHTS:
        return checkpointer.loaded_keys
    vfm_missing = vfm_keys(model) - checkpointer.loaded_keys
    if vfm_missing:
        if not cfg.MODEL.WEIGHTS:
            raise CheckpointMismatchError(
                "MODEL.WEIGHTS is empty, so the frozen VFM would keep random weights: set "
                "MODEL.WEIGHTS to the converted VFM (python tools/convert_pretrained.py "
                "--config-file <your config> --input <official file> --output <file>) or to a "
                "full rein_d2 checkpoint")
        raise CheckpointMismatchError(
            f"{cfg.MODEL.WEIGHTS} lacks {len(vfm_missing)} of the VFM's weights ({_abbrev(vfm_missing)}), "
            "which would stay random: set MODEL.WEIGHTS to the VFM converted for this config "
            "(tools/convert_pretrained.py) or to a full rein_d2 checkpoint")
    trained_missing = set(model.state_dict()) - checkpointer.loaded_keys
    if inference and trained_missing:
        raise CheckpointMismatchError(
            f"the trained part would keep its initial values: {len(trained_missing)} weights are "
            f"in no file ({_abbrev(trained_missing)}); set MODEL.TRAINED_WEIGHTS to the training "
            "checkpoint (e.g. OUTPUT_DIR/model_final.pth), or MODEL.WEIGHTS to a full checkpoint "
            "(train_net.py --eval-only --resume takes OUTPUT_DIR's last checkpoint)")
    return checkpointer.loaded_keys
