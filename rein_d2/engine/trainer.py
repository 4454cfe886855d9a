"""ReinTrainer: detectron2's DefaultTrainer with the reference's recipe (docs/method.md section 5):
AdamW param groups, poly schedule, fp16/bf16 AMP, gradient clipping, light atomic checkpoints
that resume exactly, and evaluation on every target domain."""
import glob
import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.data import MetadataCatalog, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import check_training_config
from ..data import PositionedDataset, ResumableTrainingSampler, SeededMapper, build_train_mapper
from ..data.datasets.common import dataset_dicts_checked, require_registered
from ..data.samplers import ResumableSampler, build_resumable_sampler
from ..evaluation import (INSTANCE_KINDS, PANOPTIC_KINDS, build_evaluator, build_test_loader,
                          evaluate_domain_generalization)
from ..modeling.test_time_augmentation import SemanticSegmentorWithTTA
from ..utils.cli import UserError
from .checkpoint import LightCheckpointer, RNGState, load_model_weights
from .hooks import EarlyPeriodicWriter, LossSpikeGuard, TrainingDiverged, divergence_message
from .optimizer import build_lr_scheduler, build_optimizer

__all__ = ["ReinTrainer", "ResumableTrainingSampler"]  # the sampler lives in rein_d2.data

logger = logging.getLogger(__name__)

# evaluator_types that ReinTrainer.test scores with the domain-generalization evaluation
DG_KINDS = {"sem_seg", *PANOPTIC_KINDS, *INSTANCE_KINDS}


class _NoTracebackForUserErrors(logging.Filter):
    """detectron2's training loop logs a traceback for every exception before re-raising it; an
    error the user can fix (a bad label, a full disk, a diverged run) is printed as one line by
    the tool instead."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, (UserError, TrainingDiverged))


def _quiet_user_errors() -> None:
    """Once per process, when a ReinTrainer is made (not at import: other users of detectron2's
    train loop keep its logging as it is)."""
    log = logging.getLogger("detectron2.engine.train_loop")
    if not any(isinstance(f, _NoTracebackForUserErrors) for f in log.filters):
        log.addFilter(_NoTracebackForUserErrors())


class ReinTrainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__, with two changes: AMP in fp16 or bf16 (detectron2's is fp16
        # only), and DDP over gloo for CPU models (detectron2 passes device_ids, which DDP
        # refuses for a CPU module, so `--num-gpus 2` failed on a CPU machine).
        _quiet_user_errors()
        check_training_config(cfg)  # a zero batch, no iterations, a negative crop: said first
        require_registered(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
        require_registered(cfg.DATASETS.TEST, "DATASETS.TEST")  # not only at the end of training
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_cpu = next(model.parameters()).device.type == "cpu"
        model = create_ddp_model(model, broadcast_buffers=False, **({"device_ids": None} if on_cpu else {}))
        if cfg.SOLVER.AMP.ENABLED:
            precision = {"float16": torch.float16, "bfloat16": torch.bfloat16}[cfg.SOLVER.AMP.PRECISION]
            self._trainer = AMPTrainer(model, data_loader, optimizer, precision=precision)
        else:
            self._trainer = SimpleTrainer(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = None  # made in build_hooks, which needs self.cfg
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        # detectron2's dataset dicts (FILTER_EMPTY_ANNOTATIONS drops images without instances)
        # and the sampler of DATALOADER.SAMPLER_TRAIN, in a resumable form.
        try:
            dataset = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        except AssertionError:  # detectron2's "Dataset 'x' is empty!": say where it looked
            for name in cfg.DATASETS.TRAIN:
                dataset_dicts_checked(name)
            raise
        sampler = build_resumable_sampler(cfg, dataset)
        # Each sample's augmentations are drawn from (seed, its place in the stream), so a
        # resumed run repeats them with any number of workers; the loader's own seeded
        # generator keeps its start-up draw off the global torch RNG that resume restores.
        loader = build_detection_train_loader(
            cfg, dataset=PositionedDataset(dataset), sampler=sampler,
            seed=cfg.SEED if cfg.SEED >= 0 else None,
            mapper=SeededMapper(build_train_mapper(cfg), sampler.seed))
        loader.rein_sampler = sampler  # for resume_or_load: the loader wraps it deeply
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """detectron2's evaluator for the dataset's evaluator_type (rein_d2.evaluation.EVALUATORS)."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def test(cls, cfg, model, evaluators=None, weight_files=None):
        """No evaluators given and every target of a kind the domain-generalization evaluation
        scores (semantic, panoptic, instance): that evaluation (every target at its evaluation
        size; mIoU, PQ, mask AP per target and their mean over the target domains, the source
        domain apart; the summary table and files, with the protocol record naming
        ``weight_files``, default MODEL.WEIGHTS / TRAINED_WEIGHTS, in OUTPUT_DIR/inference, or
        inference_TTA for a TTA model). Otherwise detectron2's DefaultTrainer.test with
        ``evaluators`` or those of build_evaluator (by evaluator_type)."""
        names = list(cfg.DATASETS.TEST)
        if not names:
            return OrderedDict()
        kinds = {MetadataCatalog.get(n).get("evaluator_type", None) for n in names}
        if evaluators is not None or not kinds <= DG_KINDS:
            return super().test(cfg, model, evaluators)
        was_training = model.training
        try:
            folder = "inference_TTA" if isinstance(model, SemanticSegmentorWithTTA) else "inference"
            summary = evaluate_domain_generalization(cfg, model, names, os.path.join(cfg.OUTPUT_DIR, folder),
                                                     weight_files)
        finally:
            model.train(was_training)
        results = OrderedDict(summary.results())
        if results:
            logger.info("Domain generalization:\n" + summary.table())
            print_csv_format(results)
        return results

    @classmethod
    def test_with_TTA(cls, cfg, model, weight_files=None):
        """test() with flip / multi-scale test-time augmentation (TEST.AUG.*); keys end in _TTA."""
        logger.info("Running inference with test-time augmentation ...")
        results = cls.test(cfg, SemanticSegmentorWithTTA(cfg, model), weight_files=weight_files)
        return OrderedDict((name + "_TTA", v) for name, v in results.items())

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
            elif self.cfg.DATALOADER.ASPECT_RATIO_GROUPING and self.cfg.DATALOADER.NUM_WORKERS > 0:
                logger.warning("DATALOADER.ASPECT_RATIO_GROUPING with workers batches samples in "
                               "the order the workers deliver them, so the resumed run's batches "
                               "may differ; set it False for an exact resume")
            sampler = getattr(self.data_loader, "rein_sampler", None)
            if isinstance(sampler, ResumableSampler):
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
