"""Training: the reference's optimiser and schedule, light checkpoints, the trainer."""
from .checkpoint import (CheckpointSaveError, LightCheckpointer, RNGState, check_state_fits, check_weight_files,
                         frozen_keys, light_state_dict, load_model_weights, save_atomic, vfm_keys)
from .hooks import EarlyPeriodicWriter, LossSpikeGuard, TrainingDiverged
from .output_lock import OutputDirLocked, lock_output_dir
from .optimizer import build_lr_scheduler, build_optimizer, param_groups
from .trainer import ReinTrainer, ResumableTrainingSampler

__all__ = ["CheckpointSaveError", "check_state_fits", "check_weight_files", "vfm_keys", "EarlyPeriodicWriter",
           "LossSpikeGuard", "TrainingDiverged", "LightCheckpointer", "RNGState", "frozen_keys", "light_state_dict",
           "build_lr_scheduler", "build_optimizer", "param_groups", "ReinTrainer",
           "ResumableTrainingSampler", "load_model_weights", "save_atomic", "OutputDirLocked",
           "lock_output_dir"]
