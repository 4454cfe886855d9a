"""Light checkpoints: what a frozen-VFM run trains is a few million weights, so checkpoints
hold only those (plus optimiser, scheduler, iteration and RNG state); the frozen VFM comes from
MODEL.WEIGHTS at load time. Saves are atomic."""
import os
import random
from typing import Dict, Iterable, Set

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["LightCheckpointer", "RNGState", "frozen_keys", "light_state_dict", "load_model_weights",
           "save_atomic"]

FROZEN_PREFIX = "backbone.vit."


def frozen_keys(model: torch.nn.Module) -> Iterable[str]:
    """State-dict keys of the frozen VFM: its parameters that do not train (and its buffers)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return [k for k in model.state_dict() if k.startswith(FROZEN_PREFIX) and k not in trainable]


def light_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The model's state dict without the frozen VFM."""
    frozen = set(frozen_keys(model))
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def save_atomic(data, path: str) -> None:
    """torch.save through a temporary file and a rename: an interrupted save never replaces a
    good file with a torn one."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(data, f)
    os.replace(tmp, path)


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
    atomically (temporary file, then rename) and whose loads use weights_only=True. Loading a
    light file expects the VFM to be in place already (from MODEL.WEIGHTS) and does not report
    the VFM's keys as missing."""

    def __init__(self, model, save_dir="", *, light: bool = True, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.light = light
        self.loaded_keys = set()  # state-dict keys loaded from a file so far

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": light_state_dict(self.model) if self.light else self.model.state_dict(),
                "rein_d2_light": self.light}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info(f"Saving checkpoint to {path}")
        save_atomic(data, path)
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        with open(path + ".tmp", "w") as f:
            f.write(last_filename_basename)
        os.replace(path + ".tmp", path)

    def _torch_load(self, f):
        return torch.load(f, map_location=torch.device("cpu"), weights_only=True)

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        # Record what came from a file, for callers that must not keep random weights.
        missing = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
        self.loaded_keys |= set(self.model.state_dict()) - missing
        return incompatible

    def _load_file(self, filename: str):
        data = super()._load_file(filename)
        self._loading_light = bool(data.get("rein_d2_light", False))
        return data

    def _log_incompatible_keys(self, incompatible) -> None:
        if getattr(self, "_loading_light", False):
            frozen = set(frozen_keys(self.model))
            incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if k not in frozen]
        super()._log_incompatible_keys(incompatible)


def load_model_weights(cfg, model) -> Set[str]:
    """MODEL.WEIGHTS (a full checkpoint, or the converted VFM), then MODEL.TRAINED_WEIGHTS (a
    light checkpoint of the trained part), refusing a light file as the only source. Returns
    the state-dict keys that were loaded from a file."""
    checkpointer = LightCheckpointer(model)
    if cfg.MODEL.WEIGHTS:
        checkpointer.load(cfg.MODEL.WEIGHTS, checkpointables=[])
        if checkpointer._loading_light and frozen_keys(model):
            raise ValueError(
                f"{cfg.MODEL.WEIGHTS} is a light checkpoint (trained weights only, no VFM): set "
                "MODEL.WEIGHTS to the VFM weights (tools/convert_pretrained.py output) and "
                "MODEL.TRAINED_WEIGHTS to this file")
    if cfg.MODEL.TRAINED_WEIGHTS:
        checkpointer.load(cfg.MODEL.TRAINED_WEIGHTS, checkpointables=[])
    return checkpointer.loaded_keys
