"""Training: the reference's optimiser and schedule, light checkpoints, the trainer."""
from .checkpoint import (LightCheckpointer, RNGState, frozen_keys, light_state_dict,
                         load_model_weights, save_atomic)
from .optimizer import build_lr_scheduler, build_optimizer, param_groups
from .trainer import ReinTrainer, ResumableTrainingSampler

__all__ = ["LightCheckpointer", "RNGState", "frozen_keys", "light_state_dict",
           "build_lr_scheduler", "build_optimizer", "param_groups", "ReinTrainer",
           "ResumableTrainingSampler", "load_model_weights", "save_atomic"]
