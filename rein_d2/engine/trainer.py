"""ReinTrainer: detectron2's DefaultTrainer with the reference's recipe (REIN_SPEC section 5):
AdamW param groups, poly schedule, fp16/bf16 AMP, gradient clipping, light atomic checkpoints
that resume exactly, and evaluation on every target domain."""
import glob
import itertools
import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import AMPTrainer, DefaultTrainer, hooks
from detectron2.evaluation import print_csv_format

from ..data import build_train_mapper
from ..evaluation import evaluate_domain_generalization
from .checkpoint import LightCheckpointer, RNGState, load_model_weights
from .hooks import EarlyPeriodicWriter, LossSpikeGuard, TrainingDiverged, divergence_message
from .optimizer import build_lr_scheduler, build_optimizer

__all__ = ["ReinTrainer", "ResumableTrainingSampler"]

logger = logging.getLogger(__name__)


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's seeded infinite sampler that can skip the indices already consumed, so a
    resumed run sees the same images in the same order as an uninterrupted one."""

    def __init__(self, size: int, shuffle: bool = True, seed=None):
        super().__init__(size, shuffle, seed)
        self.skip = 0  # indices of the global stream to skip (set before iteration starts)

    def _infinite_indices(self):
        return itertools.islice(super()._infinite_indices(), self.skip, None)


class ReinTrainer(DefaultTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.SOLVER.AMP.ENABLED:  # DefaultTrainer's AMPTrainer is fp16 only
            precision = {"float16": torch.float16, "bfloat16": torch.bfloat16}[cfg.SOLVER.AMP.PRECISION]
            t = self._trainer
            self._trainer = AMPTrainer(t.model, t.data_loader, t.optimizer, precision=precision)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        dataset = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]
        seed = cfg.SEED if cfg.SEED >= 0 else None
        sampler = ResumableTrainingSampler(len(dataset), seed=seed)
        # A seeded generator of its own keeps the loader's start-up draw off the global torch
        # RNG, which a resumed run restores from the checkpoint.
        loader = build_detection_train_loader(cfg, dataset=dataset, mapper=build_train_mapper(cfg),
                                              sampler=sampler, seed=seed)
        loader.rein_sampler = sampler  # for resume_or_load: the loader wraps it deeply
        return loader

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Every DATASETS.TEST target at its evaluation size; results as detectron2 reports
        them, plus the mean over targets."""
        if not cfg.DATASETS.TEST:
            return OrderedDict()
        was_training = model.training
        out_dir = os.path.join(cfg.OUTPUT_DIR, "inference")
        try:
            summary = evaluate_domain_generalization(cfg, model, list(cfg.DATASETS.TEST), out_dir)
        finally:
            model.train(was_training)
        results = OrderedDict((name, {"mIoU": m}) for name, m in summary.miou.items())
        if summary.miou:
            results["mean"] = {"mIoU": summary.mean_miou}
            logger.info("Domain generalization:\n" + summary.table())
            print_csv_format(results)
        return results

    def build_hooks(self):
        # Called at the end of DefaultTrainer.__init__: swap in the light, atomic checkpointer
        # (with the RNG state and the config) before the checkpoint hook captures it.
        model = self._trainer.model
        self.checkpointer = LightCheckpointer(
            getattr(model, "module", model), self.cfg.OUTPUT_DIR, light=self.cfg.SOLVER.LIGHT_CHECKPOINTS,
            config=self.cfg.dump(), trainer=weakref.proxy(self), rng=RNGState())
        ret = super().build_hooks()
        for i, h in enumerate(ret):
            if isinstance(h, hooks.PeriodicCheckpointer):
                h.max_to_keep = self.cfg.SOLVER.MAX_CHECKPOINTS or None
                if self.cfg.SOLVER.LOSS_SPIKE_FACTOR > 0:  # before the save, see LossSpikeGuard
                    ret.insert(i, LossSpikeGuard(self.cfg.SOLVER.LOSS_SPIKE_FACTOR,
                                                 self.cfg.SOLVER.LOSS_SPIKE_WINDOW))
                break
        return [EarlyPeriodicWriter(h._writers, h._period) if type(h) is hooks.PeriodicWriter else h
                for h in ret]

    def resume_or_load(self, resume=True):
        """The VFM (and any full weights) from MODEL.WEIGHTS, then, with ``resume`` and a
        checkpoint in OUTPUT_DIR, the trained weights, optimiser, scheduler, iteration and RNG
        state from it; the sampler skips what was already consumed."""
        model = self.checkpointer.model
        load_model_weights(self.cfg, model, inference=False)
        if resume and self.checkpointer.has_checkpoint():
            names = [k for k in self.checkpointer.checkpointables if k != "rng"]
            # (the checkpointer refuses a checkpoint of another config, see LightCheckpointer)
            extra = self.checkpointer.load(self.checkpointer.get_checkpoint_file(), names)
            self._keep_recent_checkpoints()
            self.start_iter = self.iter + 1
            if self.cfg.SEED < 0:
                logger.warning("SEED is %d: the resumed run draws a new random data order and "
                               "augmentations; set SEED >= 0 for an exact resume", self.cfg.SEED)
            sampler = getattr(self.data_loader, "rein_sampler", None)
            if isinstance(sampler, ResumableTrainingSampler):
                sampler.skip = self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH
            if "rng" in extra:
                self.checkpointer.checkpointables["rng"].load_state_dict(extra["rng"])

    def _keep_recent_checkpoints(self):
        """After a resume, count the run's earlier periodic checkpoints towards
        SOLVER.MAX_CHECKPOINTS, so that they are removed in turn too."""
        for h in self._hooks:
            if isinstance(h, hooks.PeriodicCheckpointer) and h.max_to_keep:
                found = sorted(glob.glob(os.path.join(self.cfg.OUTPUT_DIR, f"{h.file_prefix}_[0-9]*.pth")))
                h.recent_checkpoints = found[-h.max_to_keep:]

    def run_step(self):
        try:
            super().run_step()
        except TrainingDiverged:
            raise
        except FloatingPointError as e:  # detectron2's non-finite loss check
            first = str(e).splitlines()[0] if str(e) else "non-finite loss"  # not the loss dict
            where = "" if "iteration" in first else f"at iteration={self.iter}: "
            raise TrainingDiverged(f"{where}{first} {divergence_message(self.checkpointer)}") from e
