"""Two-process training on CPU (gloo) through detectron2's launch, as `--num-gpus 2` runs it:
it trains, keeps both processes' weights identical, and follows one process with the same
total batch."""
import json
import os
import sys

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import launch
from detectron2.utils import comm

from rein_d2.engine import ReinTrainer, light_state_dict
from test_training import dataset, make_cfg  # noqa: F401  (fixture)

ITERS = 3
HERE = os.path.dirname(os.path.abspath(__file__))


def _train(name, dicts, out, batch):
    """One process of a run (of one or two): train ITERS iterations of batch ``batch`` in all,
    then write this rank's trained weights, and on rank 0 the logged total losses."""
    if name not in DatasetCatalog.list():  # a spawned process starts with an empty catalogue
        DatasetCatalog.register(name, lambda: dicts)
        MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=255)
    cfg = make_cfg(name, out, "SOLVER.IMS_PER_BATCH", batch, "SOLVER.MAX_ITER", ITERS,
                   "SOLVER.CHECKPOINT_PERIOD", 1000, "INPUT.COLOR_AUG_SSD", False)
    torch.manual_seed(cfg.SEED)  # the same initial weights in every process and run
    trainer = ReinTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = getattr(trainer.model, "module", trainer.model)
    torch.save(light_state_dict(model), os.path.join(out, f"rank{comm.get_rank()}.pth"))
    if comm.is_main_process():  # detectron2 logs the mean over processes here
        losses = {it: v for v, it in trainer.storage.history("total_loss").values()}
        with open(os.path.join(out, "losses.json"), "w") as f:
            json.dump(losses, f)


def test_two_cpu_processes_train_like_one_with_the_same_total_batch(dataset, tmp_path):  # noqa: F811
    dicts = DatasetCatalog.get(dataset)
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    os.makedirs(one), os.makedirs(two)
    _train(dataset, dicts, one, 4)
    # The spawned processes import this module, test_training and conftest again, from the
    # parent's sys.path, where pytest may have put a project's tests/conftest.py first.
    sys.path.insert(0, HERE)
    try:
        launch(_train, 2, dist_url="auto", args=(dataset, dicts, two, 4))  # 2 images per process
    finally:
        sys.path.remove(HERE)

    rank0, rank1 = (torch.load(os.path.join(two, f"rank{r}.pth"), weights_only=True) for r in (0, 1))
    for k in rank0:  # DDP averaged the gradients: both processes hold the same weights
        assert torch.equal(rank0[k], rank1[k]), k
    # The same images with the same augmentations (seeded by their place in the stream) in one
    # batch of 4 or two of 2: the losses differ only by the point sampling of the mask losses,
    # drawn from each process's own random stream.
    losses = [json.load(open(os.path.join(d, "losses.json"))) for d in (one, two)]
    assert sorted(losses[0]) == sorted(losses[1]) == [str(i) for i in range(ITERS)]
    for it in losses[0]:  # measured: within 0.5%
        assert losses[1][it] == pytest.approx(losses[0][it], rel=0.02), (it, losses)
